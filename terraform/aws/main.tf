# Publishes the pod VM image as an AMI that can boot AMD SEV-SNP instances, and optionally the network
# cloud-api-adaptor needs for them. EC2 imports a raw disk only through S3 and the VM Import service role,
# so the chain is: bucket -> object -> snapshot import (role) -> AMI.

locals {
  bucket_arn   = aws_s3_bucket.images.arn
  vpc_id       = var.create_vpc ? aws_vpc.podvm[0].id : var.vpc_id
  create_sg    = var.worker_security_group_id != null
  create_vxlan = local.create_sg && var.vxlan_port != null
  role_name    = var.create_vmimport_role ? aws_iam_role.vmimport[0].name : var.vmimport_role_name
}

resource "aws_s3_bucket" "images" {
  bucket        = var.bucket_name
  force_destroy = var.force_destroy_bucket
  tags          = var.tags
}

resource "aws_s3_bucket_public_access_block" "images" {
  bucket                  = aws_s3_bucket.images.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "images" {
  bucket = aws_s3_bucket.images.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_object" "image" {
  bucket      = aws_s3_bucket.images.id
  key         = "${var.image_name}.raw"
  source      = var.image_path
  source_hash = var.image_sha256 != null ? var.image_sha256 : filemd5(var.image_path)
  tags        = var.tags

  depends_on = [aws_s3_bucket_server_side_encryption_configuration.images]
}

# VM Import/Export assumes this role (by default named "vmimport") to read the object and register the snapshot.
resource "aws_iam_role" "vmimport" {
  count = var.create_vmimport_role ? 1 : 0

  name = var.vmimport_role_name
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "vmie.amazonaws.com" }
      Action    = "sts:AssumeRole"
      Condition = { StringEquals = { "sts:Externalid" = "vmimport" } }
    }]
  })
  tags = var.tags
}

resource "aws_iam_role_policy" "vmimport" {
  name = "${var.name_prefix}-podvm-image-import"
  role = local.role_name
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      [
        {
          Effect   = "Allow"
          Action   = ["s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket"]
          Resource = [local.bucket_arn, "${local.bucket_arn}/*"]
        },
        {
          Effect   = "Allow"
          Action   = ["ec2:ModifySnapshotAttribute", "ec2:CopySnapshot", "ec2:RegisterImage", "ec2:Describe*"]
          Resource = "*"
        },
      ],
      var.kms_key_arn == null ? [] : [
        {
          Effect   = "Allow"
          Action   = ["kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"]
          Resource = var.kms_key_arn
        },
      ],
    )
  })
}

resource "aws_ebs_snapshot_import" "podvm" {
  description = "Pod VM image ${var.image_name}"
  role_name   = local.role_name
  encrypted   = var.kms_key_arn != null
  kms_key_id  = var.kms_key_arn

  disk_container {
    format = "RAW"

    user_bucket {
      s3_bucket = aws_s3_object.image.bucket
      s3_key    = aws_s3_object.image.key
    }
  }

  tags = merge(var.tags, { Name = var.image_name })

  timeouts {
    create = "60m"
  }

  # The import fails if the role cannot read the object yet.
  depends_on = [aws_iam_role_policy.vmimport]
}

# SEV-SNP instances (CpuOptions.AmdSevSnp) only launch from UEFI images; NitroTPM (tpm_support) gives the
# guest a vTPM for measured boot; ENA is required by the instance types that offer SEV-SNP.
resource "aws_ami" "podvm" {
  name                = var.image_name
  description         = "Confidential Containers peer pod VM image"
  virtualization_type = "hvm"
  architecture        = "x86_64"
  root_device_name    = var.root_device_name
  boot_mode           = "uefi"
  tpm_support         = "v2.0"
  ena_support         = true
  imds_support        = "v2.0"

  ebs_block_device {
    device_name           = var.root_device_name
    snapshot_id           = aws_ebs_snapshot_import.podvm.id
    volume_type           = "gp3"
    delete_on_termination = true
  }

  tags = merge(var.tags, { Name = var.image_name })
}

resource "aws_vpc" "podvm" {
  count = var.create_vpc ? 1 : 0

  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(var.tags, { Name = "${var.name_prefix}-vpc" })
}

resource "aws_internet_gateway" "podvm" {
  count = var.create_vpc ? 1 : 0

  vpc_id = aws_vpc.podvm[0].id
  tags   = merge(var.tags, { Name = "${var.name_prefix}-igw" })
}

resource "aws_route" "default" {
  count = var.create_vpc ? 1 : 0

  route_table_id         = aws_vpc.podvm[0].main_route_table_id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.podvm[0].id
}

resource "aws_subnet" "podvm" {
  count = var.subnet_cidr != null ? 1 : 0

  vpc_id            = local.vpc_id
  cidr_block        = var.subnet_cidr
  availability_zone = var.availability_zone
  tags              = merge(var.tags, { Name = "${var.name_prefix}-podvm" })
}

# Pod VMs accept connections from the worker nodes only: the forwarder (mTLS, from cloud-api-adaptor) and the
# pod network's VXLAN tunnel. Nothing else gets in.
resource "aws_security_group" "podvm" {
  count = local.create_sg ? 1 : 0

  name        = "${var.name_prefix}-podvm"
  description = "Peer pod VMs: agent-protocol-forwarder and VXLAN from the worker nodes only"
  vpc_id      = local.vpc_id
  tags        = merge(var.tags, { Name = "${var.name_prefix}-podvm" })
}

resource "aws_vpc_security_group_ingress_rule" "forwarder" {
  count = local.create_sg ? 1 : 0

  security_group_id            = aws_security_group.podvm[0].id
  description                  = "agent-protocol-forwarder from cloud-api-adaptor on the worker nodes"
  ip_protocol                  = "tcp"
  from_port                    = var.forwarder_port
  to_port                      = var.forwarder_port
  referenced_security_group_id = var.worker_security_group_id
  tags                         = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "vxlan" {
  count = local.create_vxlan ? 1 : 0

  security_group_id            = aws_security_group.podvm[0].id
  description                  = "Pod network VXLAN tunnel from the worker nodes"
  ip_protocol                  = "udp"
  from_port                    = var.vxlan_port
  to_port                      = var.vxlan_port
  referenced_security_group_id = var.worker_security_group_id
  tags                         = var.tags
}

resource "aws_vpc_security_group_egress_rule" "podvm" {
  for_each = local.create_sg ? toset(var.egress_cidr_blocks) : toset([])

  security_group_id = aws_security_group.podvm[0].id
  description       = "Pod VM egress (image pulls, KBS)"
  ip_protocol       = "-1"
  cidr_ipv4         = each.value
  tags              = var.tags
}
