print("usage: prunekit-bench sgemm")
