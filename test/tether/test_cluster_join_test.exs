defmodule Tether.TestClusterJoinTest do
  # The manager learns that a node joined from `:net_kernel.monitor_nodes/1`: nothing dials
  # or polls a node. A join whose `nodeup` came before the manager could tell it was this
  # node's must not be missed. Real nodes; slow: `make test`.
  use ExUnit.Case, async: false

  alias Tether.TestCluster.{Hosts, Manager}

  @moduletag :slow_cluster
  @moduletag timeout: 120_000

  setup do
    :ok = Hosts.ensure_distributed("127.0.0.1")
    on_exit(fn -> Manager.stop_cluster() end)
    uniq = System.unique_integer([:positive])
    %{prefix: "jt#{uniq}n", port: 20_000 + :rand.uniform(12_000)}
  end

  test "a node connected before its command has started has joined: no nodeup is missed",
       %{prefix: prefix, port: port} do
    # A `{:command, fun}` node that is up before its command is (here the test started it and
    # it connected to us): its one `nodeup` is long gone when the manager learns the command's
    # os_pid, and no other will come. Missed, the start fails after :boot_timeout.
    name = :"#{prefix}1@127.0.0.1"
    :ok = :net_kernel.monitor_nodes(true)

    argv =
      ["elixir", "--erl", "-start_epmd false", "--name", "#{name}"] ++
        ["--cookie", "#{Node.get_cookie()}", "--no-halt", "-e", "Node.connect(:'#{node()}')"]

    {:ok, _, early_os_pid} = Tether.run(argv, [:monitor, kill_timeout: 1])
    on_exit(fn -> Tether.stop(early_os_pid) end)
    assert_receive {:nodeup, ^name}, 60_000

    assert {:ok, [{^name, %{status: :running}}]} =
             Manager.start_cluster(
               node_count: 1,
               name_prefix: prefix,
               base_http_port: port,
               cookie: Node.get_cookie(),
               boot: {:command, fn _spec -> ["sleep", "1000"] end},
               boot_timeout: 30_000
             )

    assert :ok = Manager.stop_cluster()
  end
end

defmodule Tether.TestClusterSupervisorTest do
  use ExUnit.Case, async: true

  doctest Tether.TestCluster.Supervisor
end
