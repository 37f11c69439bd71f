"""GPU facts both sides use, apart from any driver: the GPU catalog (products, MIG profiles and placements, vGPU
types) and the MIG geometry read from it. The agent's simulated NVML, the controller's placement and the backends
read them here; nothing here talks to a GPU."""
