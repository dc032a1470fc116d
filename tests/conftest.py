import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_ZOO_OFFLINE", "1")  # tests never touch the network
