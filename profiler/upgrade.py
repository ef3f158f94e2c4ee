"""``python -m profiler upgrade``: a schema-1 profile of a zoo model to schema 2, not re-timed.

Schema 2 adds each block's persistent state bytes (:attr:`profiler.schema.Block.state_bytes_per_token`
and ``state_bytes_fixed``). For a zoo model they follow from the architecture and the request
parameters recorded in the profile (:attr:`profiler.zoo.ZooModel.state`), so an existing
profile gains them without timing anything again: every latency stays as measured, and the
file's ``command`` says both how it was timed and how it was upgraded.
"""

from __future__ import annotations

import dataclasses

from .schema import SCHEMA_VERSION, Pass, Profile, ProfileError

__all__ = ["upgrade_profile"]


def upgrade_profile(prof: Profile, command: str = "") -> Profile:
    """``prof`` with the state bytes of its zoo model filled in (timings untouched).

    :raises ProfileError: the profile is not of a zoo model, or its blocks are not the ones
        the zoo model declares state for.
    """
    from .zoo import MODELS

    where = str(prof.path) if prof.path is not None else f"profile of {prof.model.name!r}"
    zm = MODELS.get(prof.model.name)
    if zm is None or not prof.model.source.startswith("profiler/zoo/"):
        raise ProfileError(f"{where}: model {prof.model.name!r} is not a zoo model, so its state "
                           "bytes cannot be computed without the graph; profile it again with "
                           f"`python -m profiler profile` ({prof.command or 'no command recorded'})")
    params = {k: int(prof.model.parameters[k]) for k in zm.defaults
              if k in prof.model.parameters}
    missing = sorted(set(zm.defaults) - set(params))
    if missing:
        raise ProfileError(f"{where}: model parameters lack {missing[0]!r}; profile it again")
    declared = zm.state(params)
    passes: list[Pass] = []
    for p in prof.passes:
        st = declared.get(p.name, {})
        names = {b.name for b in p.blocks}
        unknown = sorted(set(st) - names)
        if unknown:
            raise ProfileError(f"{where}: pass {p.name!r} has no block {unknown[0]!r} that the "
                               f"zoo's {zm.name} has state for; profile it again")
        blocks = tuple(dataclasses.replace(b, state_bytes_per_token=st.get(b.name, (0, 0))[0],
                                           state_bytes_fixed=st.get(b.name, (0, 0))[1])
                       for b in p.blocks)
        passes.append(dataclasses.replace(p, blocks=blocks, missing_state_hint=""))
    timed = prof.command or "(no command recorded)"
    how = command or "python -m profiler upgrade"
    return dataclasses.replace(
        prof, passes=tuple(passes), schema=SCHEMA_VERSION,
        command=f"{timed}  # timings as measured then (schema 1); state bytes added from the "
                f"zoo architecture without re-timing by: {how}")
