# Used only on Packer >= 1.7 (deploy/bake runs `packer init` on this folder), where the amazon builder
# is a separate plugin. Kept apart from the template because Packer 1.6.6 rejects this block.
packer {
  required_plugins {
    amazon = {
      version = ">= 1.2.0, < 2.0.0"
      source  = "github.com/hashicorp/amazon"
    }
  }
}
