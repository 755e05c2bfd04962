defmodule Tether.FlowTest do
  # Counts mailbox bytes, VM memory and scheduler reports: not async.
  use ExUnit.Case, async: false
  import Tether.OsHelpers

  @moduletag timeout: 300_000

  defp queued_output_bytes(os_pid) do
    {:messages, messages} = Process.info(self(), :messages)
    for {:stdout, ^os_pid, data} <- messages, reduce: 0, do: (sum -> sum + byte_size(data))
  end

  test "a passive stream that owes nothing does not hold back the exit" do
    # Found by the fuzzer: with no credit at all, an exit with empty pipes was never reported.
    for _ <- 1..50 do
      {:ok, _, os_pid} = Tether.run(["true"], [:stdout, :stderr, :monitor, active: 0])
      assert_receive {:DOWN, ^os_pid, :process, _, :normal}, 5000
    end

    assert Tether.info().unread == 0
  end

  test "a slow consumer in :once mode holds at most one chunk (~1 MiB) of queued output" do
    {:ok, _, os_pid} =
      Tether.run(["head", "-c", "1000000000", "/dev/zero"], [:stdout, :monitor, active: :once])

    peak =
      Enum.reduce(1..30, 0, fn _, peak ->
        Process.sleep(20)
        queued = queued_output_bytes(os_pid)
        assert_receive {:stdout, ^os_pid, _data}, 5000
        assert_receive {:tether_passive, ^os_pid, :stdout}, 5000
        :ok = Tether.activate(os_pid, :once)
        max(peak, queued)
      end)

    assert peak <= 1_048_576, "#{peak} bytes queued"
    # The producer was blocked all along: nowhere near done.
    assert Tether.status(os_pid) == {:status, :running}
    Tether.kill(os_pid, :sigkill)
    Tether.activate(os_pid, true)
    assert_receive {:DOWN, ^os_pid, _, _, {:signal, :sigkill, false}}, 10_000
  end

  test "{:active, n} sends n chunks, then goes passive until activated" do
    {:ok, _, os_pid} =
      Tether.run("for i in 1 2 3 4 5; do echo $i; sleep 0.05; done", [
        :stdout,
        :monitor,
        active: 2
      ])

    assert_receive {:stdout, ^os_pid, "1\n"}, 5000
    assert_receive {:stdout, ^os_pid, "2\n"}, 5000
    assert_receive {:tether_passive, ^os_pid, :stdout}, 5000
    refute_receive {:stdout, ^os_pid, _}, 400
    # The process has exited by now, but its DOWN waits for the output it left.
    refute_received {:DOWN, ^os_pid, _, _, _}
    :ok = Tether.activate(os_pid, true)
    {rest, "", :normal} = collect(os_pid)
    assert rest == "3\n4\n5\n"
  end

  test "fun handlers get backpressure: one chunk at a time" do
    parent = self()

    fun = fn :stdout, _os_pid, data ->
      send(parent, {:chunk, byte_size(data)}) && Process.sleep(5)
    end

    {:ok, _, os_pid} =
      Tether.run(["head", "-c", "20000000", "/dev/zero"], [:monitor, stdout: fun])

    assert_receive {:DOWN, ^os_pid, _, _, :normal}, 30_000
    total = receive_chunks(0)
    assert total == 20_000_000
  end

  describe "streams" do
    test "stream! yields stdout on demand and raises on a non-zero exit" do
      assert Tether.stream!(["seq", "1", "1000"]) |> Enum.join() ==
               Enum.map_join(1..1000, &"#{&1}\n")

      assert_raise Tether.Stream.ExitError, ~r/exit_status, 3/, fn ->
        Tether.stream!("echo x; exit 3") |> Enum.to_list()
      end

      assert ["x\n", {:exit, {:exit_status, 3}}] =
               Tether.stream("echo x; exit 3") |> Enum.to_list()
    end

    test "input is written to stdin" do
      assert Tether.stream!(["cat"], input: Stream.map(1..3, &"#{&1},")) |> Enum.join() ==
               "1,2,3,"

      assert Tether.stream!(["wc", "-c"], input: String.duplicate("a", 100_000))
             |> Enum.join()
             |> String.trim() == "100000"
    end

    test "an endless input is read at the command's pace, and stops with it" do
      {:ok, pulled} = Agent.start_link(fn -> 0 end)

      endless =
        Stream.repeatedly(fn ->
          Agent.update(pulled, &(&1 + 1))
          :binary.copy("x", 1000)
        end)

      # head reads 100 kB and exits: the rest of the input is never pulled.
      output = Tether.stream!(["head", "-c", "100000"], input: endless) |> Enum.join()
      assert byte_size(output) == 100_000
      # What the pipes and the feed window hold, not the whole (endless) input.
      assert Agent.get(pulled, & &1) < 5_000
    end

    test "halting early stops the process" do
      parent = self()

      chunks =
        Tether.stream!(["sh", "-c", "echo $$ > /dev/stderr; exec yes"], stderr: self())
        |> Stream.each(fn _ -> send(parent, :chunk) end)
        |> Enum.take(3)

      assert length(chunks) == 3
      assert_received {:stderr, _os_pid, pid_line}
      assert wait_gone([String.to_integer(String.trim(pid_line))]) == []
    end

    test "a stream built in one process can be consumed in another" do
      stream = Tether.stream!(["echo", "hello"])
      assert Task.async(fn -> Enum.join(stream) end) |> Task.await() == "hello\n"
    end
  end

  @tag :scale
  test "10,000 concurrent children: all start, all stop; flat threads; small memory; short NIF runs" do
    threads = thread_count()
    :erlang.garbage_collect()
    memory = :erlang.memory(:total)

    {{started_us, children}, start_reports} =
      native_long_schedules(1, fn ->
        :timer.tc(fn ->
          for _ <- 1..10_000 do
            {:ok, _, os_pid} = Tether.run(["sleep", "1000"], [:monitor])
            os_pid
          end
        end)
      end)

    Enum.each(Process.list(), &:erlang.garbage_collect/1)
    per_child = div(:erlang.memory(:total) - memory, 10_000)
    assert length(Tether.which_processes()) >= 10_000
    assert thread_count() == threads

    {{stopped_us, :ok}, stop_reports} =
      native_long_schedules(1, fn ->
        :timer.tc(fn ->
          Enum.each(children, &Tether.stop/1)
          for os_pid <- children, do: assert_receive({:DOWN, ^os_pid, :process, _, _}, 60_000)
          :ok
        end)
      end)

    assert start_reports ++ stop_reports == []
    assert per_child <= 2048, "#{per_child} bytes of BEAM memory per child"
    assert Tether.which_processes() == []

    if System.get_env("TETHER_REPORT") do
      IO.puts(
        "\n  10,000 children: started in #{div(started_us, 1000)} ms, stopped in #{div(stopped_us, 1000)} ms, #{per_child} bytes each"
      )
    end
  end

  defp receive_chunks(total) do
    receive do
      {:chunk, n} -> receive_chunks(total + n)
    after
      0 -> total
    end
  end
end
