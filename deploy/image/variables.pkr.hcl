# Inputs of one image bake. `deploy/bake --help` sets them; every one is typed and described.

variable "region" {
  type        = string
  default     = "us-east-1"
  description = "AWS region the image is built and registered in."
}

variable "instance_type" {
  type        = string
  default     = "g5.xlarge"
  description = "Builder instance type: a GPU type (g5/g6/g4dn) so the boot-time GPU check runs on real hardware during the bake."
}

variable "source_ami_name" {
  type = string
  # Ubuntu 24.04 rather than 22.04: the pinned wheels (numpy 2.4, scipy 1.17) need Python >= 3.11, which
  # 22.04 only has as a universe preview build; 24.04 ships 3.12.
  default     = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04) *"
  description = "Name pattern of the base image: an Ubuntu LTS with the NVIDIA driver installed, owned by Amazon."
}

variable "app_version" {
  type        = string
  description = "Version of this repository's code baked in (a git describe or tag); names /opt/keras-serving/releases/<app_version>."
}

variable "model_name" {
  type        = string
  default     = "digits"
  description = "Model the instances serve (SERVE_MODEL_NAME)."
}

variable "model_version" {
  type        = string
  description = "Version directory of the model baked in (<store>/<model_name>/<model_version>); the only version served."
}

variable "model_store" {
  type        = string
  description = "Local model store to bake in, laid out as TensorFlow Serving's: <store>/<name>/<version>/."
}

variable "demo_page" {
  type        = bool
  default     = true
  description = "Serve the demo page at / (SERVE_DEMO_PAGE); false: the instances answer the API alone."
}

variable "source_dir" {
  type        = string
  description = "Folder holding the app's files, uploaded as the release (deploy/bake stages a clean copy of a commit)."
}

variable "volume_size_gb" {
  type = number
  # The base image's own snapshot is 75 GB at the time of writing; the volume cannot be smaller.
  default     = 100
  description = "Root volume size of the image, in GiB."
}

variable "manifest_path" {
  type        = string
  default     = "packer-manifest.json"
  description = "Where the manifest post-processor records the image built (relative paths: to Packer's working directory)."
}
