"""`theca campaign`: many runs of the twin, each a scenario (a base scenario with faults or
events injected by sweeps), each judged from the physical truth by the same invariants;
on local processes or a Dask distributed cluster. spec.py reads the campaign file and
makes the runs, judge.py holds the invariants, run.py runs them and writes the results."""
