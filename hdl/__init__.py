"""Amaranth hardware generators: weight ROMs, XNOR-popcount synapse arrays, LIF cores, layer engines, network top."""
