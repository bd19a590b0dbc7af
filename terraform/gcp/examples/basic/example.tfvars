image_path  = "/var/tmp/podvm.tar.gz"
project_id  = "example-peerpods"
bucket_name = "example-peerpods-podvm-images"
