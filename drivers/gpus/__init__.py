"""GPU facts both sides use, apart from any driver: the GPU catalog (products, MIG profiles and placements, vGPU
types), the MIG geometry read from it or from the profile table a GPU reports, and the one MIG scorer
(``mig_score``) that the controller's placement and the agent's MIG planner both decide with. The agent's
simulated NVML, the controller's placement and the backends read them here; nothing here talks to a GPU."""
