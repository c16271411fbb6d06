typedef int infer_unused;
