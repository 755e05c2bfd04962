defmodule Tether.Daemon do
  @moduledoc """
  Runs a command under a supervisor: `children = [{Tether.Daemon, cmd: ["redis-server"], name:
  MyApp.Redis}]`.

  The daemon process lives as long as its OS process. When the OS process exits with status 0
  (or its `:success_exit_code`) the daemon stops with reason `:normal`; otherwise with the
  `:DOWN` reason (`{:exit_status, 1}`, `{:signal, :sigkill, false}`, …), so the supervisor's
  restart strategy applies as for any child: `:permanent` (the default) always restarts,
  `:transient` only after a failure, `:temporary` never. When the supervisor stops the daemon,
  the OS process is stopped gracefully (SIGTERM, SIGKILL after its kill timeout) before the
  daemon exits. Each output line goes to `Logger` with a `[name]` prefix.

  Options:

    * `:cmd` (required) - the command, as for `Tether.run/2`.
    * `:name` - a name to register the daemon under; also the log prefix.
    * `:run` - more `Tether.run/2` options (`env:`, `cd:`, `kill_timeout:`, …).
    * `:restart`, `:id` - the child spec's restart strategy and id.
    * `:log_level` - the Logger level of output lines. Defaults to `:info`.
  """

  use GenServer
  require Logger

  @doc false
  def child_spec(options) do
    Tether.Options.validate(:daemon, options)
    kill_timeout = options |> Keyword.get(:run, []) |> kill_timeout()

    %{
      id: Keyword.get(options, :id, Keyword.get(options, :name, __MODULE__)),
      start: {__MODULE__, :start_link, [options]},
      restart: Keyword.get(options, :restart, :permanent),
      # Room for a graceful stop of the OS process.
      shutdown: kill_timeout * 1000 + 2000
    }
  end

  defp kill_timeout(run_options) do
    Enum.find_value(run_options, ceil(Tether.Config.get(:kill_timeout)), fn
      {:kill_timeout, seconds} when is_number(seconds) -> ceil(seconds)
      _ -> nil
    end)
  end

  @doc "Starts a daemon linked to the caller (see the moduledoc for options)."
  @spec start_link(keyword) :: GenServer.on_start()
  def start_link(options) do
    Tether.Options.validate(:daemon, options)

    # The command and its run options are checked here, in the caller, before anything runs.
    Tether.Options.validate(:daemon_run, options[:cmd], run_options(options, self()))

    case Keyword.fetch(options, :name) do
      {:ok, name} -> GenServer.start_link(__MODULE__, options, name: name)
      :error -> GenServer.start_link(__MODULE__, options)
    end
  end

  # What the daemon runs: its output comes here, line by line, and it lives by the :DOWN.
  defp run_options(options, daemon) do
    [:monitor, stdout: daemon, stderr: daemon] ++ Keyword.get(options, :run, [])
  end

  @doc "The os_pid of the daemon's OS process."
  @spec os_pid(GenServer.server()) :: Tether.os_pid()
  def os_pid(daemon), do: GenServer.call(daemon, :os_pid)

  @impl true
  def init(options) do
    Process.flag(:trap_exit, true)
    prefix = inspect(Keyword.get(options, :name, self()))

    case Tether.run(options[:cmd], run_options(options, self())) do
      {:ok, _pid, os_pid} ->
        {:ok,
         %{
           os_pid: os_pid,
           prefix: prefix,
           level: Keyword.get(options, :log_level, :info),
           partial: %{stdout: "", stderr: ""}
         }}

      {:error, reason} ->
        {:stop, reason}
    end
  end

  @impl true
  def handle_call(:os_pid, _from, state), do: {:reply, state.os_pid, state}

  @impl true
  def handle_info({stream, os_pid, data}, %{os_pid: os_pid} = state)
      when stream in [:stdout, :stderr] do
    {lines, rest} = Tether.Lines.split(state.partial[stream], data)
    for line <- lines, do: Logger.log(state.level, "[#{state.prefix}] #{line}")
    {:noreply, %{state | partial: Map.put(state.partial, stream, rest)}}
  end

  def handle_info({:DOWN, os_pid, :process, _pid, reason}, %{os_pid: os_pid} = state) do
    {:stop, reason, %{state | os_pid: nil}}
  end

  def handle_info(_other, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, %{os_pid: nil}), do: :ok

  def terminate(_reason, %{os_pid: os_pid}) do
    # Stopped by the supervisor: stop the OS process and wait for it (SIGKILL bounds the wait).
    Tether.stop(os_pid)

    receive do
      {:DOWN, ^os_pid, :process, _, _} -> :ok
    end
  end
end
