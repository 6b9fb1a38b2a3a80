# What goes into the image: the app and the model store are uploaded, then provision.sh, the same
# script tests/test_deploy.py runs locally, installs everything; validate.sh checks the result.

build {
  sources = ["source.amazon-ebs.gpu"]

  provisioner "shell" {
    inline = ["mkdir -p /tmp/keras-serving/app /tmp/keras-serving/models"]
  }

  provisioner "file" {
    # The trailing slash uploads the folder's contents; deploy/bake stages only what the app needs.
    source      = "${var.source_dir}/"
    destination = "/tmp/keras-serving/app"
  }

  provisioner "file" {
    source      = "${var.model_store}/"
    destination = "/tmp/keras-serving/models"
  }

  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; sudo -E {{ .Path }}"
    # cloud-init may still hold apt's lock on first boot: wait for it before installing anything.
    inline = [
      "cloud-init status --wait || true",
      "bash /tmp/keras-serving/app/deploy/image/provision.sh --source /tmp/keras-serving/app --model-store /tmp/keras-serving/models --app-version '${var.app_version}' --model-name '${var.model_name}' --model-version '${var.model_version}' --setting 'SERVE_DEMO_PAGE=${var.demo_page}' --cloud-agents",
      "bash /opt/keras-serving/current/deploy/image/validate.sh --gpu",
      "rm -rf /tmp/keras-serving",
    ]
  }

  post-processor "manifest" {
    output     = var.manifest_path
    strip_path = true
    custom_data = {
      app_version   = var.app_version
      model_name    = var.model_name
      model_version = var.model_version
      region        = var.region
    }
  }
}
