# The main job: a 3-node BEAM cluster run as OS processes by Tether.
#   start it, show each node joined and serving HTTP, SIGKILL one and watch it be detected and
#   restarted, stop everything, and prove that nothing is left.
# Run it with `make demo` (or `mix run examples/cluster.exs`).
#
# `mix run examples/cluster.exs --hosts` spreads a 4-node cluster over two hosts, simulated by
# two agent VMs on this machine; `--hosts agent1@HOST1,agent2@HOST2` uses real agents (started
# on each host with `elixir --name agent1@HOST1 --cookie tether_cluster --hidden -S mix
# tether.agent`, this VM started with `elixir --name demo@THIS_HOST --cookie tether_cluster
# -S mix run examples/cluster.exs --hosts ...`).

alias Tether.TestCluster.Manager

defmodule Demo do
  def step(text), do: IO.puts(["\n", IO.ANSI.format([:bright, text, :reset])])

  def say(text), do: IO.puts("  " <> text)
  def now, do: System.monotonic_time(:millisecond)
  def since(t), do: now() - t

  def group_alive(pgids), do: Enum.flat_map(pgids, &Manager.group_members/1)

  # The live members of the groups `pgids` once they are gone, or after `ms`.
  def wait_groups_gone(pgids, ms) do
    deadline = now() + ms

    Stream.repeatedly(fn -> group_alive(pgids) end)
    |> Enum.find(fn left -> left == [] or now() > deadline or Process.sleep(20) end)
  end
end

defmodule OneMachine do
  import Demo
  alias Tether.TestCluster.{Health, Manager}

  def run do
    timings = %{}
    base_port = 4100 + :rand.uniform(800)

    step(
      "1. Start a 3-node cluster (elixir --name tether_nI@127.0.0.1 --cookie ..., one HTTP port each)"
    )

    t = now()

    {:ok, nodes} =
      Manager.start_cluster(node_count: 3, base_http_port: base_port, restart_backoff: 200)

    timings = Map.put(timings, :start, since(t))

    for {name, info} <- nodes do
      joined = if name in Node.list(), do: "joined", else: "NOT JOINED"

      say(
        "#{name}  os_pid #{info.os_pid}  #{joined}  #{info.url}/health -> #{inspect(Health.http_get(info.url <> "/health"))}"
      )
    end

    say(
      "cluster up in #{timings.start} ms; this VM is #{node()}, Node.list() = #{inspect(Node.list())}"
    )

    step("2. SIGKILL one node and watch the manager detect and restart it")
    {victim, victim_info} = Enum.at(nodes, 1)
    t = now()
    :ok = Tether.kill(victim_info.os_pid, :sigkill)

    receive do
      {:node_crashed, ^victim, reason} ->
        say("detected: {:node_crashed, #{victim}, #{inspect(reason)}} after #{since(t)} ms")
    after
      5000 -> raise "crash not detected"
    end

    restarted =
      receive do
        {:node_restarted, ^victim, info} -> info
      after
        30_000 -> raise "node not restarted"
      end

    timings = Map.put(timings, :recover, since(t))

    say(
      "restarted: #{victim} is back as os_pid #{restarted.os_pid} (restart #{restarted.restart_count}) after #{timings.recover} ms"
    )

    say(
      "in Node.list()? #{victim in Node.list()}; HTTP: #{inspect(Health.http_get(restarted.url <> "/health"))}"
    )

    say(
      "the killed os_pid #{victim_info.os_pid} is gone: #{not File.exists?("/proc/#{victim_info.os_pid}")}"
    )

    step("3. Health of every node")

    for {name, status} <- Manager.check_health() do
      say("#{name}: #{inspect(status.health)}")
    end

    step("4. Last output lines of #{victim}")

    Manager.output(victim)
    |> Enum.take(-3)
    |> Enum.each(fn {stream, line} -> say("[#{stream}] #{line}") end)

    step("5. Stop the cluster and prove nothing is left")
    pgids = for {_, info} <- Manager.nodes(), do: info.os_pid
    t = now()
    :ok = Manager.stop_cluster()
    timings = Map.put(timings, :stop, since(t))
    left_in_proc = group_alive(pgids)
    say("stop_cluster -> :ok in #{timings.stop} ms")
    say("processes left in the nodes' process groups (from /proc): #{inspect(left_in_proc)}")
    say("Tether.which_processes(): #{inspect(Tether.which_processes())}")
    say("Node.list(): #{inspect(Node.list())}")

    step("Summary")
    ok? = left_in_proc == [] and Tether.which_processes() == [] and Node.list() == []

    say(
      "start 3 nodes: #{timings.start} ms | SIGKILL -> rejoined: #{timings.recover} ms | stop all: #{timings.stop} ms"
    )

    say(if ok?, do: "nothing left behind", else: "SOMETHING WAS LEFT BEHIND")
    ok?
  end
end

defmodule OverHosts do
  import Demo
  alias Tether.TestCluster.{Agent, Health, Manager}

  @cookie :tether_cluster

  # `agents` is :simulate (two agent VMs started here) or a list of agent node names.
  def run(agents) do
    base_port = 4100 + :rand.uniform(800)
    {agents, owned} = agents(agents)

    step("2. Start 4 nodes over #{length(agents)} hosts (round-robin; each runs on its agent)")
    t = now()

    {:ok, nodes} =
      Manager.start_cluster(
        hosts: agents,
        node_count: 4,
        cookie: @cookie,
        base_http_port: base_port,
        restart_backoff: 200,
        kill_timeout: 1
      )

    say("cluster up in #{since(t)} ms")

    for {name, info} <- nodes do
      http = inspect(Health.http_get(info.url <> "/health"))
      say("#{name} on #{info.host}  os_pid #{info.os_pid} there  #{info.url}/health -> #{http}")
    end

    step("3. SIGKILL a node on #{elem(hd(tl(nodes)), 1).host}: it is restarted on that host")
    {victim, victim_info} = Enum.at(nodes, 1)
    t = now()
    :ok = Tether.kill(victim_info.exec_pid, :sigkill)
    {:node_crashed, ^victim, reason} = await({:node_crashed, victim})
    say("detected: {:node_crashed, #{victim}, #{inspect(reason)}} after #{since(t)} ms")
    {:node_restarted, ^victim, info} = await({:node_restarted, victim}, 30_000)
    say("restarted on #{info.host} as os_pid #{info.os_pid} after #{since(t)} ms")

    crashed =
      case owned do
        [{agent, os_pid} | _] ->
          step("4. SIGKILL the agent #{agent}: its nodes are reported, and gone from its host")
          lost = for {name, %{host: ^agent} = info} <- Manager.nodes(), do: {name, info.os_pid}
          t = now()
          :ok = Tether.kill(os_pid, :sigkill)

          for {name, _} <- lost do
            {:node_crashed, ^name, reason} = await({:node_crashed, name})
            {:node_failed, ^name} = await({:node_failed, name})

            say(
              "{:node_crashed, #{name}, #{inspect(reason)}}, then :node_failed (#{since(t)} ms)"
            )
          end

          pids = for {_, pid} <- lost, do: pid
          left = wait_groups_gone(pids, 5000)

          say(
            "left of their groups #{inspect(pids)} in /proc after #{since(t)} ms: #{inspect(left)}"
          )

          for {name, info} <- Manager.nodes(),
              do: say("#{name} on #{info.host}: #{info.status}")

          pids

        [] ->
          []
      end

    step("5. Stop the cluster and prove nothing is left on any host")
    pids = for {_, %{os_pid: pid}} when pid != nil <- Manager.nodes(), do: pid
    t = now()
    result = Manager.stop_cluster()
    say("stop_cluster -> #{inspect(result)} in #{since(t)} ms")
    live = agents -- Enum.map(Enum.take(owned, 1), &elem(&1, 0))
    left = for agent <- live, do: {agent, :erpc.call(agent, Tether, :which_processes, [])}
    say("Tether.which_processes() on each live agent: #{inspect(left)}")
    # Simulated hosts share this machine's /proc.
    in_proc = if owned != [], do: group_alive(pids ++ crashed), else: []
    say("left in the nodes' process groups (from /proc): #{inspect(in_proc)}")

    ok? = result == :ok and Enum.all?(left, &(elem(&1, 1) == [])) and in_proc == []
    say(if ok?, do: "nothing left behind", else: "SOMETHING WAS LEFT BEHIND")
    ok?
  end

  defp agents(:simulate) do
    step("1. Simulate two hosts: two agent VMs on 127.0.0.1 (what `mix tether.agent` runs)")
    # This VM is distributed first, so epmd runs before any agent (they never start it).
    if not Node.alive?() do
      System.cmd("epmd", ["-daemon"])
      {:ok, _} = Node.start(:"demo#{System.unique_integer([:positive])}@127.0.0.1")
    end

    {"epmd: up and running" <> _, 0} = System.cmd("epmd", ["-names"])

    owned =
      for i <- 1..2 do
        name = :"agent#{i}_#{System.unique_integer([:positive])}@127.0.0.1"
        {:ok, _, os_pid} = Tether.run(Agent.command(name, @cookie), [:stdout, kill_timeout: 1])
        {name, os_pid}
      end

    for {name, os_pid} <- owned do
      receive do
        {:stdout, ^os_pid, "tether agent " <> _} -> say("#{name} ready (os_pid #{os_pid})")
      after
        30_000 -> raise "agent #{name} did not start"
      end
    end

    {Enum.map(owned, &elem(&1, 0)), owned}
  end

  defp agents(names), do: {names, []}

  defp await({tag, name}, timeout \\ 10_000) do
    receive do
      message when elem(message, 0) == tag and elem(message, 1) == name -> message
    after
      timeout -> raise "no #{tag} for #{name}"
    end
  end
end

# The manager logs crashes and restarts; the demo prints its own account instead.
Logger.configure(level: :critical)

ok? =
  case System.argv() do
    [] -> OneMachine.run()
    ["--hosts"] -> OverHosts.run(:simulate)
    ["--hosts", agents] -> OverHosts.run(Enum.map(String.split(agents, ","), &String.to_atom/1))
  end

if not ok?, do: System.halt(1)
