# The main job: a 3-node BEAM cluster run as OS processes by Tether.
#   start it, show each node joined and serving HTTP, SIGKILL one and watch it be detected and
#   restarted, stop everything, and prove that nothing is left.
# Run it with `make demo` (or `mix run examples/cluster.exs`).

alias Tether.TestCluster.{Health, Manager}

defmodule Demo do
  def step(text), do: IO.puts(["\n", IO.ANSI.format([:bright, text, :reset])])

  def say(text), do: IO.puts("  " <> text)
  def now, do: System.monotonic_time(:millisecond)
  def since(t), do: now() - t

  def group_alive(pgids), do: Enum.flat_map(pgids, &Manager.group_members/1)
end

# The manager logs crashes and restarts; the demo prints its own account instead.
Logger.configure(level: :critical)
timings = %{}
base_port = 4100 + :rand.uniform(800)

Demo.step(
  "1. Start a 3-node cluster (elixir --name tether_nI@127.0.0.1 --cookie ..., one HTTP port each)"
)

t = Demo.now()

{:ok, nodes} =
  Manager.start_cluster(node_count: 3, base_http_port: base_port, restart_backoff: 200)

timings = Map.put(timings, :start, Demo.since(t))

for {name, info} <- nodes do
  joined = if name in Node.list(), do: "joined", else: "NOT JOINED"

  Demo.say(
    "#{name}  os_pid #{info.os_pid}  #{joined}  #{info.url}/health -> #{inspect(Health.http_get(info.url <> "/health"))}"
  )
end

Demo.say(
  "cluster up in #{timings.start} ms; this VM is #{node()}, Node.list() = #{inspect(Node.list())}"
)

Demo.step("2. SIGKILL one node and watch the manager detect and restart it")
{victim, victim_info} = Enum.at(nodes, 1)
t = Demo.now()
:ok = Tether.kill(victim_info.os_pid, :sigkill)

receive do
  {:node_crashed, ^victim, reason} ->
    Demo.say("detected: {:node_crashed, #{victim}, #{inspect(reason)}} after #{Demo.since(t)} ms")
after
  5000 -> raise "crash not detected"
end

restarted =
  receive do
    {:node_restarted, ^victim, info} -> info
  after
    30_000 -> raise "node not restarted"
  end

timings = Map.put(timings, :recover, Demo.since(t))

Demo.say(
  "restarted: #{victim} is back as os_pid #{restarted.os_pid} (restart #{restarted.restart_count}) after #{timings.recover} ms"
)

Demo.say(
  "in Node.list()? #{victim in Node.list()}; HTTP: #{inspect(Health.http_get(restarted.url <> "/health"))}"
)

Demo.say(
  "the killed os_pid #{victim_info.os_pid} is gone: #{not File.exists?("/proc/#{victim_info.os_pid}")}"
)

Demo.step("3. Health of every node")

for {name, status} <- Manager.check_health() do
  Demo.say("#{name}: #{inspect(status.health)}")
end

Demo.step("4. Last output lines of #{victim}")

Manager.output(victim)
|> Enum.take(-3)
|> Enum.each(fn {stream, line} -> Demo.say("[#{stream}] #{line}") end)

Demo.step("5. Stop the cluster and prove nothing is left")
pgids = for {_, info} <- Manager.nodes(), do: info.os_pid
t = Demo.now()
:ok = Manager.stop_cluster()
timings = Map.put(timings, :stop, Demo.since(t))
left_in_proc = Demo.group_alive(pgids)
Demo.say("stop_cluster -> :ok in #{timings.stop} ms")
Demo.say("processes left in the nodes' process groups (from /proc): #{inspect(left_in_proc)}")
Demo.say("Tether.which_processes(): #{inspect(Tether.which_processes())}")
Demo.say("Node.list(): #{inspect(Node.list())}")

Demo.step("Summary")
ok? = left_in_proc == [] and Tether.which_processes() == [] and Node.list() == []

Demo.say(
  "start 3 nodes: #{timings.start} ms | SIGKILL -> rejoined: #{timings.recover} ms | stop all: #{timings.stop} ms"
)

Demo.say(if ok?, do: "nothing left behind", else: "SOMETHING WAS LEFT BEHIND")
if not ok?, do: System.halt(1)
