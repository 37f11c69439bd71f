"""OpenStack Cyborg agent driver that takes its GPUs from the gpufabric agent's reported inventory.

``devices`` (standard library only) turns the agent's ``inventory.json`` into the devices Cyborg should know;
``agent_driver`` is the ``cyborg.accelerator.driver`` entry point ``gpufabric_gpu_driver`` that cyborg-agent loads
(it imports Cyborg, so it is only importable where cyborg-agent runs). See docs/openstack.md, "Cyborg".
"""
