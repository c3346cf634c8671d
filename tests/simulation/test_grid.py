"""The in-process Grid: Flower's public Grid interface, messages handled by the ClientApp."""

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from flwr.serverapp import ServerApp

from fedrec.simulation.grid import InProcessGrid


def client_app_and_calls():
    app, calls = ClientApp(), []

    @app.train()
    def train(msg, context):
        partition = int(context.node_config["partition-id"])
        if partition == 2:
            raise RuntimeError("device 2 is broken")
        seen = int(context.state.config_records.get("seen", ConfigRecord({"n": 0}))["n"]) + 1
        context.state.config_records["seen"] = ConfigRecord({"n": seen})  # kept per node
        calls.append(partition)
        return Message(RecordDict({"reply": ConfigRecord({"partition": partition, "seen": seen})}),
                       reply_to=msg)

    return app, calls


def run(grid, rounds: int) -> list[list[Message]]:
    server, replies = ServerApp(), []

    @server.main()
    def main(grid, context):
        for _ in range(rounds):
            messages = [Message(RecordDict({"x": ConfigRecord({"v": 1})}), node, "train")
                        for node in grid.get_node_ids()]
            replies.append(list(grid.send_and_receive(messages)))

    grid.serve(server)
    return replies


def test_each_node_runs_the_client_app_with_its_own_partition_and_state():
    app, calls = client_app_and_calls()
    grid = InProcessGrid(app, num_nodes=4, run_config={})
    first, second = run(grid, rounds=2)
    assert calls == [0, 1, 3, 0, 1, 3]  # in message order, node 2 failing each time
    ok = [r for r in second if r.has_content()]
    assert [r.content.config_records["reply"]["partition"] for r in ok] == [0, 1, 3]
    assert all(r.content.config_records["reply"]["seen"] == 2 for r in ok)  # context persisted
    assert [r.metadata.src_node_id for r in second] == list(grid.get_node_ids())
    assert grid.node_map() == {n: i for i, n in enumerate(grid.get_node_ids())}


def test_an_exception_in_the_client_app_comes_back_as_an_error_reply():
    app, _ = client_app_and_calls()
    (replies,) = run(InProcessGrid(app, num_nodes=3, run_config={}), rounds=1)
    broken = replies[2]
    assert broken.has_error() and not broken.has_content()
    assert broken.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert "device 2 is broken" in broken.error.reason
