"""NVML return codes and enum values the simulator uses (values from nvml.h)."""

from __future__ import annotations

SUCCESS = 0
UNINITIALIZED = 1
INVALID_ARGUMENT = 2
NOT_SUPPORTED = 3
NO_PERMISSION = 4
NOT_FOUND = 6
INSUFFICIENT_SIZE = 7
TIMEOUT = 10
GPU_IS_LOST = 15
RESET_REQUIRED = 16
IN_USE = 19
INSUFFICIENT_RESOURCES = 23
ARGUMENT_VERSION_MISMATCH = 25
UNKNOWN = 999

ERROR_STRINGS: dict[int, str] = {
    SUCCESS: "Success",
    UNINITIALIZED: "Uninitialized",
    INVALID_ARGUMENT: "Invalid Argument",
    ARGUMENT_VERSION_MISMATCH: "Argument version mismatch",
    NOT_SUPPORTED: "Not Supported",
    NO_PERMISSION: "Insufficient Permissions",
    NOT_FOUND: "Not Found",
    INSUFFICIENT_SIZE: "Insufficient Size",
    TIMEOUT: "Timeout",
    GPU_IS_LOST: "GPU is lost",
    RESET_REQUIRED: "GPU requires reset",
    IN_USE: "In use by another client",
    INSUFFICIENT_RESOURCES: "Insufficient Resources",
    UNKNOWN: "Unknown Error",
}

# enums
MIG_DISABLE = 0
MIG_ENABLE = 1
ID_ANY = 0xFFFFFFFF
EVENT_SINGLE_BIT_ECC = 0x1
EVENT_DOUBLE_BIT_ECC = 0x2
EVENT_XID = 0x8
TOPOLOGY_SINGLE = 10
TOPOLOGY_NODE = 40
TOPOLOGY_SYSTEM = 50
P2P_OK = 0
P2P_NOT_SUPPORTED = 5
P2P_CAPS_NVLINK = 2
VIRT_NONE = 0
VIRT_HOST_VGPU = 3
HOST_VGPU_SRIOV = 1
BRAND_NVIDIA = 14
BRAND_TESLA = 2
COMPUTE_MODE_COUNT = 4
COMPUTE_MODE_EXCLUSIVE_THREAD = 1


class NvmlFail(Exception):
    """Raised inside the simulator; the API layer turns it into the return code."""

    def __init__(self, code: int) -> None:
        super().__init__(ERROR_STRINGS.get(code, f"code {code}"))
        self.code = code
