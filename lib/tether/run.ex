defmodule Tether.Run do
  @moduledoc false
  # Starting OS processes: `Tether.run/2` (here, with `:sync`, or on another node through
  # `Tether.Remote`) and `Tether.manage/2`. Options are checked by `Tether.Options`, the refusals
  # by `Tether.Guard`, and the `Tether.Process` is started by `Tether.Process.start/2`.

  @doc false
  @spec run(Tether.command(), Tether.options()) ::
          {:ok, pid, Tether.os_pid()} | {:error, atom} | {:ok, keyword} | {:error, keyword}
  def run(command, options) do
    spec = Tether.Options.validate(:run, command, options)

    cond do
      spec.node != node() -> Tether.Remote.run(spec, command, options)
      spec.sync -> Tether.Sync.run(spec)
      true -> Tether.Process.start(spec)
    end
  end

  @doc false
  @spec manage(Tether.os_pid(), Tether.options()) :: {:ok, pid, Tether.os_pid()} | {:error, atom}
  def manage(os_pid, options) when is_integer(os_pid) do
    spec = Tether.Options.validate(:manage, options)

    with {:ok, os_pid} <- Tether.Control.resolve(os_pid),
         :ok <- started(),
         :ok <- Tether.Guard.check_manage(os_pid, spec.kill_group) do
      case Tether.Process.start(spec, adopt: os_pid) do
        {:error, :esrch} -> {:error, :no_process}
        other -> other
      end
    end
  end

  def manage(other, _options) do
    raise ArgumentError, "Tether.manage/2 expects an os_pid (integer), got: #{inspect(other)}"
  end

  defp started, do: if(Tether.Guard.started?(), do: :ok, else: {:error, :not_started})
end
