defmodule Tether.Native do
  @moduledoc false
  # NIF stubs and the loader. Nothing but `Tether` and `Tether.Process` calls these.

  @on_load :load_nif

  @doc false
  def load_nif do
    # erts sets SIGCHLD to SIG_IGN, which makes the kernel reap children and lose their exit
    # status. This documented erts call restores the default; erts's own child helper reaps
    # its own children, so it is safe.
    :ok = :os.set_signal(:sigchld, :default)

    case :code.priv_dir(:tether) do
      {:error, reason} ->
        {:error, {:priv_dir, reason}}

      priv ->
        native = Path.join(priv, "native")

        :erlang.load_nif(
          String.to_charlist(Path.join(native, "libtether_nif")),
          load_info(native)
        )
    end
  end

  # The watchdog kills every child group when the VM dies; without it only direct children die
  # with the VM (PR_SET_PDEATHSIG).
  defp load_info(native) do
    watchdog = Path.join(native, "tether_watchdog")
    %{watchdog: if(File.regular?(watchdog), do: watchdog)}
  end

  def start(_spec, _owner, _process), do: err()
  def adopt(_os_pid, _spec, _owner, _process), do: err()
  def write(_os_pid, _binary), do: err()
  def close_stdin(_os_pid), do: err()
  def winsz(_os_pid, _rows, _cols), do: err()
  def counters(_os_pid, _reply_to, _ref), do: err()
  def rlimit_known(_name), do: err()
  def stop(_os_pid), do: err()
  def kill(_os_pid, _signal), do: err()
  def status(_os_pid), do: err()
  def which(), do: err()
  def process_of(_os_pid), do: err()
  def stop_all(_reply_to), do: err()
  def signal_number(_name), do: err()
  def watchdog_os_pid(), do: err()

  defp err, do: :erlang.nif_error(:nif_not_loaded)
end
