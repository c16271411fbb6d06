// scale_update.cuh: not written yet
