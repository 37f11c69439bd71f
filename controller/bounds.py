"""Bounded input types for the API models: what the store's columns and the database can hold.

A value outside these bounds is refused with 422 at the boundary instead of reaching SQL, where it would be a
500 (PostgreSQL refuses NUL bytes, over-long strings and integers past its column types; SQLite silently stores
the first two). Integers and booleans are strict: JSON ``true`` is not 1, and ``1.5`` or ``"1"`` are not
integers. NUL bytes in the request path or query are refused before routing (controller.api.admission).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, StrictBool, StrictInt

INT32_MAX = 2**31 - 1  # INTEGER columns
INT64_MAX = 2**63 - 1  # BIGINT columns, SQLite integers, LIMIT/OFFSET
MAX_OFFSET = 10_000_000  # past any real listing, far inside BIGINT
NO_NUL = r"^[^\x00]*$"


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL bytes")
    return value


# Names stored in String(128) columns (tenants, GPU models, backends, pools, tokens).
Name128 = Annotated[str, Field(min_length=1, max_length=128, pattern=NO_NUL), AfterValidator(no_nul)]
ShortText = Annotated[str, Field(max_length=128, pattern=NO_NUL), AfterValidator(no_nul)]
TaskKind = Annotated[str, Field(min_length=1, max_length=64, pattern=NO_NUL), AfterValidator(no_nul)]
Reason = Annotated[str, Field(max_length=4096, pattern=NO_NUL), AfterValidator(no_nul)]
Count32 = Annotated[StrictInt, Field(ge=0, le=INT32_MAX)]
Flag = StrictBool
