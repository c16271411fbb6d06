// adamw.cuh: not written yet
