"""Data files shipped with riskgate (a package so that installs include them).

``synth_networks.json.gz``: the network catalogue of ``riskgate synth``, derived
from DB-IP Lite (CC BY 4.0, "IP Geolocation by DB-IP", https://db-ip.com);
rebuild it with ``bench/build_synth_networks.py``.
"""
