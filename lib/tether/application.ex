defmodule Tether.Application do
  @moduledoc false
  # Starts the supervisor of what the library needs (the native event loop starts when the NIF
  # loads; the `:exec` layer adds its own server to it on first use), and on
  # stop stops every OS process before the VM goes on: SIGTERM to every group at once, then
  # SIGKILL at each child's kill timeout. It waits for the last exit, not for a fixed time.

  use Application
  require Logger

  # Children get SIGKILL at their kill_timeout; this only bounds processes stuck in the kernel.
  @stop_wait_ms 60_000

  @impl true
  def start(_type, _args) do
    # Load the NIF now rather than on first use: the event loop and the watchdog start with the
    # application, SIGCHLD is restored early, and a broken build fails here, clearly.
    with {:ok, config} <- Tether.Config.load(),
         {:module, Tether.Native} <- Code.ensure_loaded(Tether.Native) do
      # The watchdog kills every child group when the VM dies; it starts here, with the
      # configured program (the NIF may have loaded before the application's env was set).
      watchdog = Tether.Config.watchdog_path(Tether.Native.native_dir())
      # Children are cloned from a small spawner process (nil: from the VM's reactor thread).
      spawner = Tether.Config.spawner_path(Tether.Native.native_dir())

      :ok =
        Tether.Native.configure(
          config.max_children,
          config.read_chunk,
          config.busy_poll_us,
          watchdog,
          spawner
        )

      case configure_cgroups(config) do
        :ok ->
          children = [Tether.History]
          Supervisor.start_link(children, strategy: :one_for_one, name: Tether.Supervisor)

        error ->
          error
      end
    else
      {:error, message} when is_binary(message) ->
        {:error, {:invalid_config, message}}

      {:error, reason} ->
        {:error, {:nif_not_loaded, reason, "run `mix compile` to build the Tether NIF"}}
    end
  end

  # A cgroup per child where the hierarchy allows it (or as configured).
  defp configure_cgroups(config) do
    mode =
      case config.cgroups do
        :auto -> :auto
        true -> :required
        false -> :off
      end

    case Tether.Native.configure_cgroups(mode, config.cgroup_root) do
      {:ok, _path} -> :ok
      {:error, reason} -> {:error, {:cgroups, reason}}
    end
  end

  @impl true
  def prep_stop(state) do
    stop_all_children()
    state
  end

  @doc false
  @spec stop_all_children() :: :ok | :timeout
  def stop_all_children do
    :ok = Tether.Native.stop_all(self())

    receive do
      :tether_all_stopped -> :ok
    after
      @stop_wait_ms ->
        Logger.warning("Tether: children still alive #{@stop_wait_ms} ms after stop")
        :timeout
    end
  end
end
