# A tour of Tether with real processes: start, stream, signal, stop, and prove nothing is left.
# Run it with `make tour` (or `mix run examples/tour.exs`).

defmodule Demo do
  def say(text), do: IO.puts("  " <> text)

  def ms(started), do: "#{System.monotonic_time(:millisecond) - started} ms"

  def await_down(os_pid) do
    receive do
      {:DOWN, ^os_pid, :process, _pid, reason} -> reason
    after
      10_000 -> raise "no DOWN for #{os_pid}"
    end
  end

  def alive?(os_pid) do
    case File.read("/proc/#{os_pid}/stat") do
      {:ok, stat} -> not (stat |> String.split(") ") |> List.last() |> String.starts_with?("Z"))
      _ -> false
    end
  end
end

IO.puts("Tether demo: real OS processes driven from the BEAM\n")

IO.puts("1. Streaming output as messages")

{:ok, _pid, os_pid} =
  Tether.run("for i in 1 2 3; do echo tick $i; sleep 0.2; done", [:stdout, :monitor])

Stream.repeatedly(fn ->
  receive do
    {:stdout, ^os_pid, data} ->
      Demo.say("#{os_pid} stdout: #{inspect(data)}")

    {:DOWN, ^os_pid, :process, _, reason} ->
      Demo.say("#{os_pid} exited: #{inspect(reason)}") && :done
  end
end)
|> Enum.find(&(&1 == :done))

IO.puts("\n2. Exact exit statuses and exec errors")

for {label, command} <- [{"exit 3", "exit 3"}, {"kill -9 self", "kill -9 $$"}] do
  {:ok, _, os_pid} = Tether.run(command, [:monitor])
  Demo.say("#{label} -> #{inspect(Demo.await_down(os_pid))}")
end

Demo.say("missing program -> #{inspect(Tether.run(["no-such-program"]))}")

IO.puts("\n3. Signals reach the whole process group")
{:ok, _, os_pid} = Tether.run("sleep 100 & echo $!; wait", [:stdout, :monitor])
grandchild = receive(do: ({:stdout, ^os_pid, line} -> String.to_integer(String.trim(line))))

Demo.say(
  "child #{os_pid} started grandchild #{grandchild}; status #{inspect(Tether.status(os_pid))}"
)

:ok = Tether.kill(os_pid, :sigstop)
Process.sleep(100)
Demo.say("after SIGSTOP: #{inspect(Tether.status(os_pid))}")
:ok = Tether.kill(os_pid, :sigcont)
started = System.monotonic_time(:millisecond)
:ok = Tether.stop(os_pid)
Demo.say("stop -> #{inspect(Demo.await_down(os_pid))} in #{Demo.ms(started)}")
Process.sleep(50)
Demo.say("grandchild #{grandchild} alive? #{Demo.alive?(grandchild)}")

IO.puts("\n4. A child that ignores SIGTERM is killed after kill_timeout")

{:ok, _, os_pid} =
  Tether.run("trap '' TERM; echo ready; while :; do sleep 1; done", [
    :stdout,
    :monitor,
    kill_timeout: 1
  ])

receive(do: ({:stdout, ^os_pid, "ready\n"} -> :ok))
started = System.monotonic_time(:millisecond)
:ok = Tether.stop(os_pid)
Demo.say("stop -> #{inspect(Demo.await_down(os_pid))} after #{Demo.ms(started)}")

IO.puts("\n5. Children die with their owner")
parent = self()

owner =
  spawn(fn ->
    {:ok, _, os_pid} = Tether.run(["sleep", "100"])
    send(parent, {:child, os_pid})
    receive(do: (:go -> exit(:crash)))
  end)

child = receive(do: ({:child, os_pid} -> os_pid))
send(owner, :go)
Process.sleep(200)
Demo.say("owner crashed; its child #{child} alive? #{Demo.alive?(child)}")

IO.puts("\n6. Spawn latency: 200 x /bin/true, spawn -> DOWN")

times =
  for _ <- 1..200 do
    t = System.monotonic_time(:microsecond)
    {:ok, _, os_pid} = Tether.run(["/bin/true"], [:monitor])
    Demo.await_down(os_pid)
    System.monotonic_time(:microsecond) - t
  end

sorted = Enum.sort(times)
Demo.say("median #{Enum.at(sorted, 100)} us, p99 #{Enum.at(sorted, 197)} us")

IO.puts("\nLeft behind: #{inspect(Tether.which_processes())}")
