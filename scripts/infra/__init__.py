"""Infrastructure every layer above may use: processes, the network, probes, PostgreSQL,
Docker, prerequisites. Imports nothing from scripts.ops or scripts.backends."""
