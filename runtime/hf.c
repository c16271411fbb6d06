/* placeholder */ typedef int hf_unused;
