defmodule Tether.Exec.Terminal do
  @moduledoc false
  # erlexec's termios options (`{pty, Opts}`, `pty_opts/2`) on a running `pty` child: set with
  # `stty -F` on the child's terminal, found through /proc/PID/fd. The terminal's settings are
  # shared by both ends, so this is what erlexec's `tcsetattr` on the master does.

  @doc false
  @spec set(pos_integer, [{atom, integer | boolean}]) :: :ok | {:error, term}
  def set(_os_pid, []), do: :ok

  def set(os_pid, modes) do
    with {:ok, tty} <- tty(os_pid),
         {:ok, _} <- stty(["-F", tty | Tether.Exec.Options.stty_args(modes)]) do
      :ok
    else
      _ -> {:error, ~c"failed to set pty opts"}
    end
  end

  defp tty(os_pid) do
    Enum.find_value([0, 1, 2], {:error, :not_a_tty}, fn fd ->
      case File.read_link("/proc/#{os_pid}/fd/#{fd}") do
        {:ok, "/dev/pts/" <> _ = tty} -> {:ok, tty}
        _ -> nil
      end
    end)
  end

  defp stty(args) do
    case System.find_executable("stty") do
      nil -> {:error, :no_stty}
      stty -> Tether.run([stty | args], [:sync])
    end
  end
end
