# Spawn -> exit-notice latency of /bin/true: Tether against Port.open(spawn_executable), measured
import Bitwise
# side by side in one run (interleaved batches, so drift hits both), then again with 2 GiB of
# binaries live in the VM. Run: `mix run bench/spawn.exs [runs]` (default 1000 runs per row).

defmodule SpawnBench do
  @true_path System.find_executable("true")

  def tether_once do
    t = System.monotonic_time(:nanosecond)
    {:ok, _, os_pid} = Tether.run([@true_path], [:monitor])

    receive do
      {:DOWN, ^os_pid, :process, _, :normal} -> System.monotonic_time(:nanosecond) - t
    end
  end

  def port_once do
    t = System.monotonic_time(:nanosecond)
    port = Port.open({:spawn_executable, @true_path}, [:exit_status])

    receive do
      {^port, {:exit_status, 0}} -> System.monotonic_time(:nanosecond) - t
    end
  end

  @doc "Runs both, interleaved in batches of 20; returns %{tether: [ns], port: [ns]}."
  def measure(runs) do
    Enum.reduce(1..div(runs, 20), %{tether: [], port: []}, fn _, acc ->
      %{
        tether: Enum.map(1..20, fn _ -> tether_once() end) ++ acc.tether,
        port: Enum.map(1..20, fn _ -> port_once() end) ++ acc.port
      }
    end)
  end

  def stats(samples) do
    sorted = Enum.sort(samples)
    n = length(sorted)

    %{
      median: Enum.at(sorted, div(n, 2)) / 1000,
      p99: Enum.at(sorted, min(n - 1, div(n * 99, 100))) / 1000
    }
  end

  def row(label, stats, base, base_label) do
    ratio =
      if base, do: :io_lib.format("~.2fx ~s", [stats.median / base.median, base_label]), else: ""

    IO.puts(
      String.pad_trailing(label, 44) <>
        String.pad_leading(:erlang.float_to_binary(stats.median, decimals: 0), 9) <>
        String.pad_leading(:erlang.float_to_binary(stats.p99, decimals: 0), 9) <>
        "   " <> IO.chardata_to_string(ratio)
    )
  end
end

runs = with [arg | _] <- System.argv(), {n, ""} <- Integer.parse(arg), do: n, else: (_ -> 1000)

# Warm up both paths.
SpawnBench.measure(40)
small = SpawnBench.measure(runs)

# 2 GiB of binaries, every page touched: what makes a fork() slow.
big = for _ <- 1..2048, do: :binary.copy(<<7>>, 1_048_576)
total = Enum.reduce(big, 0, &(byte_size(&1) + &2))
large = SpawnBench.measure(runs)

tether_small = SpawnBench.stats(small.tether)
port_small = SpawnBench.stats(small.port)
tether_large = SpawnBench.stats(large.tether)
port_large = SpawnBench.stats(large.port)

IO.puts(
  "\nspawn -> exit notice of /bin/true, #{runs} runs per row, #{System.schedulers_online()} schedulers, #{:erlang.system_info(:logical_processors)} cores"
)

IO.puts(String.pad_trailing("row", 44) <> "  median(us)  p99(us)   ratio")
SpawnBench.row("Tether, small VM", tether_small, port_small, "Port")
SpawnBench.row("Port.open spawn_executable, small VM", port_small, nil, "")

SpawnBench.row(
  "Tether, #{div(total, 1 <<< 30)} GiB of binaries live",
  tether_large,
  tether_small,
  "Tether small VM"
)

SpawnBench.row(
  "Port.open, #{div(total, 1 <<< 30)} GiB of binaries live",
  port_large,
  port_small,
  "Port small VM"
)

SpawnBench.row("Tether vs Port, both with 2 GiB live", tether_large, port_large, "Port")
# Keep the binaries alive until here.
:erlang.phash2(big)
