"""What runs inside the pod VM."""
