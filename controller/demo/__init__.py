"""The bundled demo: a controller on SQLite and a simulated fleet of agents."""
