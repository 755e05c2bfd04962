# Tether's benchmark suite: every row measured in this one run, side by side with its baselines
# (Erlang Ports, System.cmd, and raw Rust floors with no BEAM, from native/tether_bench), and
# printed as ratios. A full run writes bench/RESULTS.md; `--quick` is a short pass.
#
#   MIX_ENV=prod mix run bench/run.exs [--quick]

defmodule Bench do
  @moduledoc false

  def now_us, do: System.monotonic_time(:microsecond)

  def stats(samples) do
    sorted = Enum.sort(samples)
    n = length(sorted)
    %{median: Enum.at(sorted, div(n, 2)), p99: Enum.at(sorted, min(n - 1, div(n * 99, 100)))}
  end

  # ── Spawn → exit notice ──────────────────────────────────────────────────────────────────

  @true_path System.find_executable("true")

  def tether_spawn do
    t = now_us()
    {:ok, _, os_pid} = Tether.run([@true_path], [:monitor])
    receive do: ({:DOWN, ^os_pid, :process, _, :normal} -> now_us() - t)
  end

  def port_spawn do
    t = now_us()
    port = Port.open({:spawn_executable, @true_path}, [:exit_status])
    receive do: ({^port, {:exit_status, 0}} -> now_us() - t)
  end

  def system_cmd_spawn do
    t = now_us()
    {"", 0} = System.cmd(@true_path, [])
    now_us() - t
  end

  # Interleaved batches of 20, so that drift on a shared machine hits every contender alike.
  # A contender is a fun returning one sample, or a fun of the batch size returning a batch.
  def spawn_latency(runs, contenders) do
    batches = max(div(runs, 20), 1)

    batch = fn
      fun when is_function(fun, 1) -> fun.(20)
      fun -> Enum.map(1..20, fn _ -> fun.() end)
    end

    Enum.reduce(1..batches, Map.new(contenders, &{elem(&1, 0), []}), fn _, acc ->
      Enum.reduce(contenders, acc, fn {name, fun}, acc ->
        Map.update!(acc, name, &(batch.(fun) ++ &1))
      end)
    end)
    |> Map.new(fn {name, samples} -> {name, stats(samples)} end)
  end

  # Runs every contender `rounds` times, interleaved (a drift of the shared machine hits them
  # alike), after one untimed warm-up each; returns each one's median result.
  def interleaved(rounds, contenders) do
    Enum.each(contenders, fn {_, fun} -> fun.(:warm_up) end)

    1..rounds
    |> Enum.flat_map(fn _ ->
      Enum.map(contenders, fn {name, fun} -> {name, fun.(:measure)} end)
    end)
    |> Enum.group_by(&elem(&1, 0), &elem(&1, 1))
    |> Map.new(fn {name, results} -> {name, stats(results).median} end)
  end

  # ── Throughput ───────────────────────────────────────────────────────────────────────────

  def producer(mib), do: ["dd", "if=/dev/zero", "bs=1M", "count=#{mib}", "status=none"]

  def tether_stdout(mib) do
    t = now_us()
    {:ok, _, os_pid} = Tether.run(producer(mib), [:stdout, :monitor])
    bytes = count_tether(os_pid, 0)
    {bytes, now_us() - t}
  end

  defp count_tether(os_pid, n) do
    receive do
      {:stdout, ^os_pid, data} -> count_tether(os_pid, n + byte_size(data))
      {:DOWN, ^os_pid, :process, _, :normal} -> n
    end
  end

  def port_stdout(mib) do
    [program | args] = producer(mib)
    t = now_us()

    port =
      Port.open({:spawn_executable, System.find_executable(program)}, [
        :binary,
        :exit_status,
        args: args
      ])

    bytes = count_port(port, 0)
    {bytes, now_us() - t}
  end

  defp count_port(port, n) do
    receive do
      {^port, {:data, data}} -> count_port(port, n + byte_size(data))
      {^port, {:exit_status, 0}} -> n
    end
  end

  def floor_stdout(floor, mib) do
    {out, 0} = System.cmd(floor, ["read" | producer(mib)])
    [bytes, seconds] = String.split(String.trim(out), " ")
    {String.to_integer(bytes), round(String.to_float(seconds) * 1_000_000)}
  end

  def gbps({bytes, us}), do: bytes / us / 1000

  # stdin: `head -c N > /dev/null` ends when it has read everything, so the exit marks the end.
  def tether_stdin(mib, chunk) do
    t = now_us()
    {:ok, _, os_pid} = Tether.run("head -c #{mib * 1_048_576} > /dev/null", [:stdin, :monitor])
    for _ <- 1..mib, do: :ok = Tether.send(os_pid, chunk)
    receive do: ({:DOWN, ^os_pid, :process, _, :normal} -> :ok)
    {mib * 1_048_576, now_us() - t}
  end

  def port_stdin(mib, chunk) do
    t = now_us()
    script = "head -c #{mib * 1_048_576} > /dev/null"

    port =
      Port.open({:spawn_executable, "/bin/sh"}, [:binary, :exit_status, args: ["-c", script]])

    for _ <- 1..mib, do: true = Port.command(port, chunk)
    receive do: ({^port, {:exit_status, 0}} -> :ok)
    {mib * 1_048_576, now_us() - t}
  end

  # ── Echo round trips through cat ─────────────────────────────────────────────────────────

  def tether_echo(rounds, block) do
    {:ok, _, os_pid} = Tether.run(["cat"], [:stdin, :stdout, :monitor])
    t = now_us()

    for _ <- 1..rounds,
        do:
          (
            :ok = Tether.send(os_pid, block)
            take_tether(os_pid, byte_size(block))
          )

    elapsed = now_us() - t
    Tether.send(os_pid, :eof)
    receive do: ({:DOWN, ^os_pid, _, _, _} -> :ok)
    elapsed / rounds
  end

  defp take_tether(_os_pid, 0), do: :ok

  defp take_tether(os_pid, left) do
    receive do: ({:stdout, ^os_pid, data} -> take_tether(os_pid, left - byte_size(data)))
  end

  def port_echo(rounds, block) do
    port = Port.open({:spawn_executable, System.find_executable("cat")}, [:binary])
    t = now_us()

    for _ <- 1..rounds,
        do:
          (
            true = Port.command(port, block)
            take_port(port, byte_size(block))
          )

    elapsed = now_us() - t
    Port.close(port)
    elapsed / rounds
  end

  defp take_port(_port, 0), do: :ok

  defp take_port(port, left) do
    receive do: ({^port, {:data, data}} -> take_port(port, left - byte_size(data)))
  end

  # ── Memory with a slow consumer ──────────────────────────────────────────────────────────

  # Consumes one message every 5 ms for `ms`; returns the peak of output queued in the mailbox.
  def slow_consumer(kind, ms) do
    [program | args] = producer(1000)

    {handle, receive_one} =
      case kind do
        :port ->
          port =
            Port.open({:spawn_executable, System.find_executable(program)}, [:binary, args: args])

          {{:port, port}, fn -> receive do: ({^port, {:data, _}} -> :ok) end}

        mode ->
          {:ok, _, os_pid} = Tether.run(producer(1000), [:stdout, :monitor, active: mode])

          {{:tether, os_pid},
           fn ->
             receive do:
                       ({:stdout, ^os_pid, _} ->
                          if(mode == :once, do: Tether.activate(os_pid, :once)))
           end}
      end

    deadline = System.monotonic_time(:millisecond) + ms

    peak =
      Stream.repeatedly(fn ->
        receive_one.()
        Process.sleep(5)
        queued_bytes()
      end)
      |> Enum.reduce_while(0, fn growth, peak ->
        peak = max(peak, growth)
        if System.monotonic_time(:millisecond) < deadline, do: {:cont, peak}, else: {:halt, peak}
      end)

    case handle do
      {:port, port} ->
        # The producer may have finished (and the port closed) within the window.
        with {:os_pid, os_pid} <- Port.info(port, :os_pid) do
          System.cmd("kill", ["-9", "#{os_pid}"])
        end

        if Port.info(port), do: Port.close(port)

      {:tether, os_pid} ->
        Tether.kill(os_pid, :sigkill)
        Tether.activate(os_pid, true)
        drain(os_pid)
    end

    flush()
    peak
  end

  defp queued_bytes do
    {:messages, messages} = Process.info(self(), :messages)

    Enum.reduce(messages, 0, fn
      {_, {:data, data}}, sum -> sum + byte_size(data)
      {:stdout, _, data}, sum -> sum + byte_size(data)
      _, sum -> sum
    end)
  end

  defp drain(os_pid) do
    receive do
      {:DOWN, ^os_pid, _, _, _} -> :ok
      {:stdout, ^os_pid, _} -> drain(os_pid)
    end
  end

  defp flush do
    receive do
      _ -> flush()
    after
      0 -> :ok
    end
  end

  # ── Many children ────────────────────────────────────────────────────────────────────────

  def tether_many(n) do
    memory = beam_memory()

    {start_us, pids} = start_sleepers(n)

    # Steady state: a Tether.Process hibernates once it has waited 100 ms.
    Process.sleep(200)

    per_child = per_child(memory, n)

    {stop_us, _} =
      :timer.tc(fn ->
        Enum.each(pids, &Tether.stop/1)
        for os_pid <- pids, do: receive(do: ({:DOWN, ^os_pid, _, _, _} -> :ok))
      end)

    %{start_ms: start_us / 1000, stop_ms: stop_us / 1000, per_child: per_child}
  end

  def port_many(n) do
    sleep = System.find_executable("sleep")
    memory = beam_memory()

    {start_us, ports} =
      :timer.tc(fn ->
        for _ <- 1..n, do: Port.open({:spawn_executable, sleep}, [:exit_status, args: ["1000"]])
      end)

    # A Port makes no process and no ETS record: its own memory is what it costs there (the
    # delta of the VM's process memory is noise left by earlier rows, and went negative).
    own = ports |> Enum.map(&elem(Port.info(&1, :memory), 1)) |> Enum.sum()
    per_child = per_child(memory, n) |> Map.put(:processes_ets, own / n)
    os_pids = for port <- ports, do: elem(Port.info(port, :os_pid), 1)

    {stop_us, _} = :timer.tc(fn -> stop_ports(ports, os_pids) end)

    %{start_ms: start_us / 1000, stop_ms: stop_us / 1000, per_child: per_child}
  end

  # What a child costs the BEAM: `:processes_ets` (its processes and ETS records; for a Port,
  # the port's own memory instead) and `:all` (everything but
  # binaries and code: also NIF resources, monitors). Binaries are left out because earlier
  # rows' are released asynchronously.
  defp per_child(before, n) do
    Map.new(beam_memory(), fn {kind, bytes} -> {kind, (bytes - before[kind]) / n} end)
  end

  # The baseline is taken once the processes of earlier rows are gone: a Tether.Process exits
  # after its :DOWN, asynchronously, and counting that memory as freed by the next row's
  # children printed a negative figure for Ports.
  defp beam_memory do
    settle(Process.list() |> length(), 50)
    Enum.each(Process.list(), &:erlang.garbage_collect/1)
    memory = Map.new(:erlang.memory())

    %{
      processes_ets: memory.processes + memory.ets,
      all: memory.total - memory.binary - memory.code - memory.atom
    }
  end

  defp settle(_count, 0), do: :ok

  defp settle(count, tries) do
    Process.sleep(20)

    case length(Process.list()) do
      ^count -> :ok
      now -> settle(now, tries - 1)
    end
  end

  # ── Scaling and rusage ───────────────────────────────────────────────────────────────────

  # `n` more live children (sleepers, stopped later by `stop_sleepers/1`); returns their
  # os_pids and the start time of all of them in µs.
  # The program is given by its path, as to a Port (a bare name costs a PATH search in the
  # child: one failed execve per directory before it).
  def start_sleepers(n) do
    sleep = System.find_executable("sleep")
    :timer.tc(fn -> for _ <- 1..n, do: elem(Tether.run([sleep, "1000"], [:monitor]), 2) end)
  end

  # `n` more Tether sleepers and `n` Port sleepers, started in alternating chunks of `chunk` so
  # that drift on a shared machine hits both alike; returns each one's start time per child in
  # µs and the Tether sleepers' os_pids. Each chunk of Port sleepers is stopped (untimed) before
  # the next chunk starts: the VM's descriptors would not hold 15,000 children at once.
  def start_sleepers_beside_ports(n, chunk) do
    sleep = System.find_executable("sleep")

    {tether_us, port_us, os_pids} =
      Enum.reduce(1..div(n, chunk), {0, 0, []}, fn _, {t, p, os_pids} ->
        {dt, more} = start_sleepers(chunk)

        {dp, ports} =
          :timer.tc(fn ->
            for _ <- 1..chunk,
                do: Port.open({:spawn_executable, sleep}, [:exit_status, args: ["1000"]])
          end)

        stop_ports(ports)
        {t + dt, p + dp, more ++ os_pids}
      end)

    {tether_us / n, port_us / n, os_pids}
  end

  # A Port cannot stop its program: signal every one, then wait for every exit status. SIGKILL:
  # a SIGTERM that lands before `erl_child_setup`'s child has reset its signals is lost (seen:
  # 2 of 250 sleepers just started survived it).
  def stop_ports(ports, os_pids \\ nil) do
    (os_pids || Enum.map(ports, &elem(Port.info(&1, :os_pid), 1)))
    |> Enum.chunk_every(500)
    |> Enum.each(&System.cmd("kill", ["-KILL" | Enum.map(&1, fn p -> "#{p}" end)]))

    for port <- ports, do: receive(do: ({^port, {:exit_status, _}} -> :ok))
  end

  # Stops them and waits until their Tether.Process processes are gone too (up to 30 s): the
  # memory row that follows takes its baseline then, or it counts their exit as freed memory.
  def stop_sleepers(os_pids, processes_before) do
    Enum.each(os_pids, &Tether.stop/1)
    for os_pid <- os_pids, do: receive(do: ({:DOWN, ^os_pid, _, _, _} -> :ok))
    wait_processes(processes_before, 1500)
  end

  defp wait_processes(before, tries) do
    if tries > 0 and length(Process.list()) > before + 10 do
      Process.sleep(20)
      wait_processes(before, tries - 1)
    end
  end

  # max_rss in KiB as Tether reports it, and as `/usr/bin/time -v` does (median of 3 each).
  def max_rss(argv) do
    tether =
      for _ <- 1..3 do
        {:ok, _, os_pid} = Tether.run(argv, [:monitor])
        receive do: ({:DOWN, ^os_pid, _, _, _} -> :ok)
        div(Tether.info(os_pid).max_rss, 1024)
      end

    time =
      for _ <- 1..3 do
        {out, _} = System.cmd("/usr/bin/time", ["-v" | argv], stderr_to_stdout: true)
        [_, kib] = Regex.run(~r/Maximum resident set size \(kbytes\): (\d+)/, out)
        String.to_integer(kib)
      end

    {stats(tether).median, stats(time).median}
  end

  # ── Output ───────────────────────────────────────────────────────────────────────────────

  def fmt(x) when is_float(x), do: :erlang.float_to_binary(x, decimals: 2)
  def fmt(x), do: to_string(x)
  def ratio(a, b), do: "#{fmt(a / b)}×"
end

quick? = "--quick" in System.argv()

{floor_out, 0} =
  System.cmd("cargo", ["build", "--release", "-q", "-p", "tether_bench"], stderr_to_stdout: true)

_ = floor_out
floor = Path.expand("target/release/tether_bench")

runs = if quick?, do: 200, else: 1000
mib = if quick?, do: 256, else: 1024
echo_rounds = if quick?, do: 2000, else: 10_000
# Throughput rows: median of this many interleaved runs.
rounds = if quick?, do: 1, else: 3
memory_ms = if quick?, do: 1000, else: 2000
many = if quick?, do: 1000, else: 10_000
port_many = min(many, 5000)

IO.puts(
  "Tether benchmarks (#{if quick?, do: "quick", else: "full"}): #{System.schedulers_online()} schedulers, " <>
    "#{:erlang.system_info(:logical_processors)} cores"
)

# Warm up every path once.
Bench.spawn_latency(40, tether: &Bench.tether_spawn/0, port: &Bench.port_spawn/0)

IO.puts("· spawn latency")

# The floor runs in the same interleaved batches: the Rust program times each spawn itself
# and prints every sample (the first, its own warm-up, is dropped).
floor_spawn = fn count ->
  {out, 0} = System.cmd(floor, ["spawn", "#{count + 1}", "--samples"])
  out |> String.split() |> tl() |> Enum.map(&String.to_float/1)
end

small =
  Bench.spawn_latency(runs,
    tether: &Bench.tether_spawn/0,
    port: &Bench.port_spawn/0,
    system_cmd: &Bench.system_cmd_spawn/0,
    floor: floor_spawn
  )

%{median: floor_median, p99: floor_p99} = small.floor

IO.puts("· spawn latency with 2 GiB of binaries live")
big = for _ <- 1..2048, do: :binary.copy(<<7>>, 1_048_576)
large = Bench.spawn_latency(runs, tether: &Bench.tether_spawn/0, port: &Bench.port_spawn/0)
:erlang.phash2(big)
big = nil
_ = big
:erlang.garbage_collect()

IO.puts("· stdout throughput")
# Warm-ups move 64 MiB; every measured run moves `mib`.
size = fn phase -> if phase == :warm_up, do: 64, else: mib end

%{tether: tether_out, port: port_out, floor: floor_out} =
  Bench.interleaved(rounds,
    tether: &Bench.gbps(Bench.tether_stdout(size.(&1))),
    port: &Bench.gbps(Bench.port_stdout(size.(&1))),
    floor: &Bench.gbps(Bench.floor_stdout(floor, size.(&1)))
  )

IO.puts("· stdin throughput")
chunk = :binary.copy(<<1>>, 1_048_576)

%{tether: tether_in, port: port_in} =
  Bench.interleaved(rounds,
    tether: &Bench.gbps(Bench.tether_stdin(size.(&1), chunk)),
    port: &Bench.gbps(Bench.port_stdin(size.(&1), chunk))
  )

IO.puts("· echo round trips")
block = :binary.copy(<<2>>, 4096)
# Several short batches rather than one long one: the round trip time is bimodal on shared
# cores (it depends on where the threads land), and batches see both modes alike.
batch = fn phase -> if phase == :warm_up, do: 200, else: div(echo_rounds, 5) end

%{tether: tether_echo, port: port_echo} =
  Bench.interleaved(5,
    tether: &Bench.tether_echo(batch.(&1), block),
    port: &Bench.port_echo(batch.(&1), block)
  )

IO.puts("· slow consumers")
mem_port = Bench.slow_consumer(:port, memory_ms)
mem_active = Bench.slow_consumer(true, memory_ms)
mem_once = Bench.slow_consumer(:once, memory_ms)

IO.puts("· spawn latency with 0, 5,000 and 10,000 live children")
# Room for 10,000 sleepers and the spawns measured beside them.
# These rows measure the spawner (the default; `config :tether, spawner: false` turns it off)
# against the VM's own clone; the rows above use the default.
spawner_path = Path.join(Tether.Native.native_dir(), "tether_spawner")

configure = fn spawner ->
  :ok =
    Tether.Native.configure(
      20_000,
      Tether.Config.get(:read_chunk),
      Tether.Config.get(:busy_poll_us),
      nil,
      spawner
    )
end

configure.(spawner_path)

# The same spawns cloned by the VM itself (`spawner: false`), in the same batches: why the
# spawner exists.
direct = fn count ->
  configure.(nil)
  samples = for _ <- 1..count, do: Bench.tether_spawn()
  configure.(spawner_path)
  samples
end

scale_runs = if quick?, do: 200, else: 600

scale = fn ->
  Bench.spawn_latency(scale_runs,
    tether: &Bench.tether_spawn/0,
    port: &Bench.port_spawn/0,
    direct: direct
  )
end

processes_before = length(Process.list())
none_live = scale.()
{start_5k_us, sleepers_5k} = Bench.start_sleepers(5000)
live_5k = scale.()
{start_beside_us, port_beside_us, sleepers_10k} = Bench.start_sleepers_beside_ports(5000, 250)
live_10k = scale.()
Bench.stop_sleepers(sleepers_5k ++ sleepers_10k, processes_before)

IO.puts("· max_rss against /usr/bin/time -v")
rss_true = Bench.max_rss([System.find_executable("true")])
rss_big = Bench.max_rss(["perl", "-e", "$x = \"x\" x (300 * 1024 * 1024)"])

IO.puts("· #{many} concurrent children")
tether_many = Bench.tether_many(many)
port_many_result = Bench.port_many(port_many)

mib_of = fn bytes -> Bench.fmt(bytes / 1_048_576) end

rows = [
  [
    "spawn→DOWN `/bin/true`, median µs",
    "#{small.tether.median}",
    "Port #{small.port.median}; System.cmd #{small.system_cmd.median}; raw floor #{floor_median}",
    "#{Bench.ratio(small.tether.median, floor_median)} floor (≤ 1.1×), #{Bench.ratio(small.tether.median, small.port.median)} Port (≤ 0.7×)"
  ],
  [
    "spawn→DOWN `/bin/true`, p99 µs",
    "#{small.tether.p99}",
    "Port #{small.port.p99}; System.cmd #{small.system_cmd.p99}; raw floor #{floor_p99}",
    "#{Bench.ratio(small.tether.p99, small.port.p99)} Port, #{Bench.ratio(small.tether.p99, floor_p99)} floor"
  ],
  [
    "same, 2 GiB of binaries live, median µs",
    "#{large.tether.median}",
    "Tether small VM #{small.tether.median}; Port #{large.port.median}",
    "#{Bench.ratio(large.tether.median, small.tether.median)} small VM (≤ 1.2×)"
  ],
  [
    "spawn→DOWN `/bin/true` with 5,000 / 10,000 live children, median µs",
    "#{live_5k.tether.median} / #{live_10k.tether.median}",
    "none live #{none_live.tether.median}; Port #{none_live.port.median} / #{live_5k.port.median} / #{live_10k.port.median}; cloned by the VM (`spawner: false`) #{none_live.direct.median} / #{live_5k.direct.median} / #{live_10k.direct.median}",
    "#{Bench.ratio(live_5k.tether.median, none_live.tether.median)} / #{Bench.ratio(live_10k.tether.median, none_live.tether.median)} none live (≤ 1.1×); VM-cloned #{Bench.ratio(live_5k.direct.median, none_live.direct.median)} / #{Bench.ratio(live_10k.direct.median, none_live.direct.median)}"
  ],
  [
    "start time per child, 5,000 started beside 5,000 live (in chunks of 250, alternating with Ports) / all #{many} from none, µs",
    "#{Bench.fmt(start_beside_us)} / #{Bench.fmt(tether_many.start_ms * 1000 / many)}",
    "Port, the same 5,000 beside them #{Bench.fmt(port_beside_us)}; Port (#{port_many} from none) #{Bench.fmt(port_many_result.start_ms * 1000 / port_many)}",
    "#{Bench.ratio(start_beside_us, port_beside_us)} / #{Bench.ratio(tether_many.start_ms * 1000 / many, port_many_result.start_ms * 1000 / port_many)} Port (≤ 1.0×); first 5,000: #{Bench.fmt(start_5k_us / 5000)} µs"
  ],
  [
    "max_rss of `/bin/true` / of perl allocating 300 MB (median of 3), KiB",
    "#{elem(rss_true, 0)} / #{elem(rss_big, 0)}",
    "/usr/bin/time -v #{elem(rss_true, 1)} / #{elem(rss_big, 1)}",
    "#{Bench.ratio(elem(rss_true, 0), elem(rss_true, 1))} / #{Bench.ratio(elem(rss_big, 0), elem(rss_big, 1))} time -v (within 10%)"
  ],
  [
    "stdout throughput, #{mib} MiB from dd (median of #{rounds}), GB/s",
    Bench.fmt(tether_out),
    "Port #{Bench.fmt(port_out)}; raw reader #{Bench.fmt(floor_out)}",
    "#{Bench.ratio(tether_out, port_out)} Port (≥ 1.0×), #{Bench.ratio(tether_out, floor_out)} floor (≥ 0.7×)"
  ],
  [
    "stdin throughput, #{mib} MiB into head (median of #{rounds}), GB/s",
    Bench.fmt(tether_in),
    "Port.command #{Bench.fmt(port_in)}",
    "#{Bench.ratio(tether_in, port_in)} Port (≥ 1.0×)"
  ],
  [
    "echo round trip, #{echo_rounds} × 4 KiB through cat (5 batches, median), µs",
    Bench.fmt(tether_echo),
    "Port #{Bench.fmt(port_echo)}",
    "#{Bench.ratio(tether_echo, port_echo)} Port (≤ 1.0×)"
  ],
  [
    "peak output queued in the mailbox, slow consumer of dd, MiB",
    "#{mib_of.(mem_once)} (`:once`)",
    "Port #{mib_of.(mem_port)}; Tether `active: true` #{mib_of.(mem_active)}",
    "`:once` bounded (≤ 2 MiB)"
  ],
  [
    "#{many} children: start all / stop all, ms",
    "#{Bench.fmt(tether_many.start_ms)} / #{Bench.fmt(tether_many.stop_ms)}",
    "Port (#{port_many}) #{Bench.fmt(port_many_result.start_ms)} / #{Bench.fmt(port_many_result.stop_ms)}",
    "stop-all ≤ 1000 ms"
  ],
  [
    "#{many} children: BEAM memory per child (processes + ETS, a Port's own; all but binaries), bytes",
    "#{Bench.fmt(tether_many.per_child.processes_ets)}; #{Bench.fmt(tether_many.per_child.all)}",
    "Port #{Bench.fmt(port_many_result.per_child.processes_ets)}; #{Bench.fmt(port_many_result.per_child.all)}",
    "processes + ETS ≤ 2048; report"
  ]
]

table =
  ["| row | Tether | baselines (same run) | ratio (target) |", "|---|---|---|---|"] ++
    Enum.map(rows, fn row -> "| " <> Enum.join(row, " | ") <> " |" end)

IO.puts("\n" <> Enum.join(table, "\n"))

if not quick? do
  header = """
  # Benchmark results

  Generated by `MIX_ENV=prod mix run bench/run.exs` on #{Date.utc_today()} — do not edit by hand.
  Machine: #{:erlang.system_info(:logical_processors)} cores, #{System.schedulers_online()} schedulers, \
  OTP #{System.otp_release()}, Elixir #{System.version()}. Every row was measured in the same run;
  on shared cores absolute times drift, ratios hold.

  """

  File.write!(Path.join(__DIR__, "RESULTS.md"), header <> Enum.join(table, "\n") <> "\n")
  IO.puts("\nwrote bench/RESULTS.md")
end
