"""MIG packing benchmark: requests served before the first refusal, engine vs first-fit vs exact optimum."""
