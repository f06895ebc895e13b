print("convert")
