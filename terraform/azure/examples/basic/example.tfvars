image_path           = "/var/tmp/podvm.vhd"
subscription_id      = "00000000-0000-0000-0000-000000000000"
resource_group_name  = "peerpods-rg"
storage_account_name = "peerpodsimages0001"
