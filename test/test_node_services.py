"""Service callbacks of the node answer failures instead of raising into the executor (rclpy's executor sends
whatever the callback returns: None raised in ``send_response`` and ended ``rclpy.spin``). A real service and
client over the test's DDS graph, the node's own decorator and input stage."""
from __future__ import annotations

import threading

import pytest


def test_a_failing_service_is_answered_and_the_executor_keeps_spinning(ros_context):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from std_srvs.srv import Trigger

    from aliked_ros.ros.input_stage import InputStage
    from aliked_ros.ros.node import guarded_service

    class Server(Node):
        def __init__(self):
            super().__init__("guarded_service_test", context=ros_context)
            self.inputs = InputStage()
            self.calls = 0
            self.create_service(Trigger, "~/fails_first", self._on_call)

        @guarded_service
        def _on_call(self, request, response):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("the service body failed")
            response.success, response.message = True, "fine"
            return response

    server = Server()
    client_node = Node("guarded_service_client", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(server)
    executor.add_node(client_node)
    errors: list[BaseException] = []
    stop = threading.Event()

    def spin():
        try:
            while not stop.is_set():
                executor.spin_once(timeout_sec=0.05)
        except BaseException as error:  # noqa: BLE001 - what the test is about
            errors.append(error)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        client = client_node.create_client(Trigger, "/guarded_service_test/fails_first")
        assert client.wait_for_service(timeout_sec=20.0), "service not discovered"
        answers = []
        for _ in range(2):
            future = client.call_async(Trigger.Request())
            done = threading.Event()
            future.add_done_callback(lambda _f: done.set())
            assert done.wait(20.0), f"no answer (executor errors: {errors})"
            answers.append(future.result())
        assert not errors, errors
        assert thread.is_alive()
        first, second = answers
        assert first.success is False and "the service body failed" in first.message, first
        assert second.success is True and second.message == "fine", second
        assert server.inputs.snapshot().counters.get("callback_error") == 1
    finally:
        stop.set()
        thread.join(5.0)
        executor.shutdown()
        server.destroy_node()
        client_node.destroy_node()


if __name__ == "__main__":
    pytest.main([__file__, "-q"])
