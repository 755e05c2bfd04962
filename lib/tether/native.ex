defmodule Tether.Native do
  @moduledoc false
  # NIF stubs and the loader. Nothing but Tether's own modules calls these.

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
        :erlang.load_nif(String.to_charlist(Path.join([priv, "native", "libtether_nif"])), 0)
    end
  end

  @doc false
  # Where the NIF and the watchdog program are installed.
  def native_dir, do: Path.join(:code.priv_dir(:tether), "native")

  def start(_spec, _owner, _process, _reply_ref), do: err()
  def adopt(_os_pid, _spec, _owner, _process, _reply_ref), do: err()
  def write(_os_pid, _binary), do: err()
  def close_stdin(_os_pid), do: err()
  def stdin_flushed(_os_pid, _reply_to, _ref), do: err()
  def winsz(_os_pid, _rows, _cols), do: err()
  def counters(_os_pid, _reply_to, _ref), do: err()
  def rlimit_known(_name), do: err()

  def configure(_max_children, _read_chunk, _busy_poll_us, _watchdog_path, _spawner_path),
    do: err()

  def count(), do: err()
  def leftovers(), do: err()
  def configure_cgroups(_mode, _base), do: err()
  def cgroups(), do: err()
  def activate(_os_pid, _stream, _credit), do: err()
  def stop(_os_pid), do: err()
  def kill(_os_pid, _signal), do: err()
  def status(_os_pid), do: err()
  def which(), do: err()
  def process_of(_os_pid), do: err()
  def stop_all(_reply_to), do: err()
  def signal_number(_name), do: err()
  def watchdog_os_pid(), do: err()
  def spawner_os_pid(), do: err()

  defp err, do: :erlang.nif_error(:nif_not_loaded)
end
