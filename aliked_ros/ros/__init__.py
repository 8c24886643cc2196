"""The ROS 2 shell around the VO core: node, message conversions, DDS settings. The only place that uses rclpy."""
