"""What a model is, without TensorFlow: the store on disk (versions, files, serving.json) and the
signature the protocols are typed against."""
