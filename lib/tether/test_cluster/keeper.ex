defmodule Tether.TestCluster.Keeper do
  @moduledoc false
  # A node's keeper, linked to the manager: it calls `Tether.run/2`, so it owns the node's OS
  # process (a remote start waits for its host here, not in the manager), and forwards its
  # output, tagged with the node's name (os_pids are only unique per host), then its `:DOWN`.
  # If the manager dies, so does the keeper, and Tether stops the OS process on its host.
  #
  # To the manager: `{:launched, ref, result}`, `{:node_output, name, stream, data}` and the
  # OS process's `{:DOWN, os_pid, :process, pid, reason}`.

  @doc "Starts the keeper of node `name`, linked to the calling manager."
  @spec start_link(node) :: pid
  def start_link(name) do
    manager = self()
    spawn_link(fn -> keep(manager, name) end)
  end

  @doc "Asks the keeper to start the node's OS process; `{:launched, ref, result}` follows."
  @spec launch(pid, reference, [String.t()], Tether.options()) :: :ok
  def launch(keeper, ref, argv, options) do
    send(keeper, {:launch, ref, argv, options})
    :ok
  end

  @doc "The node got a new name (it moved to a host with another hostname)."
  @spec rename(pid, node) :: :ok
  def rename(keeper, name) do
    send(keeper, {:rename, name})
    :ok
  end

  @doc "The node is forgotten: the keeper ends."
  @spec stop(pid) :: :ok
  def stop(keeper) do
    send(keeper, :stop)
    :ok
  end

  defp keep(manager, name) do
    receive do
      {:launch, ref, argv, options} ->
        result =
          try do
            Tether.run(argv, options)
          rescue
            error -> {:error, {:exception, error}}
          end

        send(manager, {:launched, ref, result})
        keep(manager, name)

      {stream, _os_pid, data} when stream in [:stdout, :stderr] ->
        send(manager, {:node_output, name, stream, data})
        keep(manager, name)

      {:DOWN, os_pid, :process, _, _} = down when is_integer(os_pid) ->
        send(manager, down)
        keep(manager, name)

      {:rename, new_name} ->
        keep(manager, new_name)

      :stop ->
        :ok
    end
  end
end
