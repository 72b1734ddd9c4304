"""Studies: grids of runs through the sweep runner (sweep.py), each with its analysis, and `study sampling`
(sampling.py), which decodes one trained run and is no sweep.

STUDIES maps a study's name (`trimdm study NAME`) to its Study: `grid(scale, seeds, overrides, **options)`
builds the RunSpecs, `analyse(out, runs, scale)` reads the finished runs and writes results.json, study.md
and its plots. A new study is a module beside batch.py that defines one Study, and a line here.
"""
from trimdm.study.antimask import ANTIMASK
from trimdm.study.batch import BATCH
from trimdm.study.critical_batch import CRITICAL_BATCH
from trimdm.study.isoflop import SCALING
from trimdm.study.mixing import MIXING
from trimdm.study.schedules import SCHEDULE
from trimdm.study.sweep import Study

STUDIES: dict[str, Study] = {s.name: s for s in (BATCH, SCHEDULE, ANTIMASK, MIXING, CRITICAL_BATCH, SCALING)}
