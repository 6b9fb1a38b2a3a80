# The builder: a temporary GPU instance from the newest matching base image, snapshotted into our image.
# No `required_plugins` block: Debian 12's packer (1.6.6) has amazon-ebs built in and rejects one;
# deploy/bake installs the plugin from plugins/ on Packer >= 1.7.

locals {
  # AMI names allow [A-Za-z0-9()[] ./'@_-] only; versions such as "v1.2+3" are made safe here.
  image_name = "keras-serving-${replace(var.app_version, "/[^A-Za-z0-9._-]/", "-")}-${var.model_name}-${replace(var.model_version, "/[^A-Za-z0-9._-]/", "-")}-${formatdate("YYYYMMDDhhmmss", timestamp())}"
  tags = {
    Name          = local.image_name
    Application   = "keras-serving"
    AppVersion    = var.app_version
    ModelName     = var.model_name
    ModelVersion  = var.model_version
    BaseImageId   = "{{ .SourceAMI }}"
    BaseImageName = "{{ .SourceAMIName }}"
  }
}

source "amazon-ebs" "gpu" {
  region          = var.region
  instance_type   = var.instance_type
  ami_name        = local.image_name
  ami_description = "keras-serving ${var.app_version}, model ${var.model_name} ${var.model_version}"
  tags            = local.tags
  snapshot_tags   = local.tags
  run_tags        = { Name = "packer-${local.image_name}" }
  encrypt_boot    = true

  source_ami_filter {
    filters = {
      name                = var.source_ami_name
      architecture        = "x86_64"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    owners      = ["amazon"]
    most_recent = true
  }

  launch_block_device_mappings {
    device_name           = "/dev/sda1"
    volume_size           = var.volume_size_gb
    volume_type           = "gp3"
    iops                  = 3000
    throughput            = 250
    encrypted             = true
    delete_on_termination = true
  }

  ssh_username = "ubuntu"
  # Packer makes a throwaway key pair and security group open to the builder's address only.
  ssh_timeout = "15m"
}
