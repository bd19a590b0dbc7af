image_path               = "/var/cache/peerpods-image/latest/podvm.raw"
bucket_name              = "example-peerpods-podvm-images"
vpc_id                   = "vpc-0123456789abcdef0"
worker_security_group_id = "sg-0123456789abcdef0"
