"""Side by side: real OpenStack Placement's ``GET /allocation_candidates?resources=VGPU:1`` against gpufabric's
placement decision for the same request on an equivalent fleet. Run ``python -m bench.placement_vs_openstack``.
"""
