// LlamaModel
