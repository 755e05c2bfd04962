defmodule Tether.TestCluster.Hosts do
  @moduledoc false
  # What `start_cluster/1` does in the caller before the manager is asked: this VM made a
  # distributed node (before any node or agent boots), and each agent connected and checked.

  @doc "Makes this VM a distributed node named after `hostname`, unless it is one already."
  @spec ensure_distributed(String.t()) :: :ok | {:error, {:distribution_failed, term}}
  def ensure_distributed(hostname) do
    if Node.alive?() do
      :ok
    else
      # `epmd -daemon` forks and returns; epmd outlives us on purpose, like after `erl -name`.
      # It is started with a Port, never as a Tether child: a child's group (and soon its
      # cgroup) is killed when the child is stopped, and epmd must not go with it.
      if epmd = System.find_executable("epmd"), do: System.cmd(epmd, ["-daemon"])
      name = :"tether_manager_#{System.unique_integer([:positive])}@#{hostname}"

      case Node.start(name, :longnames) do
        {:ok, _} -> :ok
        {:error, reason} -> {:error, {:distribution_failed, reason}}
      end
    end
  end

  @doc """
  Connects each agent of `config.hosts` (hidden, so that `global` never cuts the connection
  that owns its nodes), checks that it runs Tether, and adds `:tether_dirs`: where Tether's
  code is on each host.
  """
  @spec connect(Tether.TestCluster.Config.t()) ::
          {:ok, Tether.TestCluster.Config.t()}
          | {:error, {:host_unreachable, node} | {:tether_not_running, node}}
  def connect(%{hosts: nil} = config), do: {:ok, Map.put(config, :tether_dirs, %{})}

  def connect(config) do
    Enum.reduce_while(config.hosts, {:ok, Map.put(config, :tether_dirs, %{})}, fn host,
                                                                                  {:ok, config} ->
      case connect_host(host, config) do
        {:ok, dir} -> {:cont, {:ok, put_in(config, [:tether_dirs, host], dir)}}
        {:error, reason} -> {:halt, {:error, reason}}
      end
    end)
  end

  defp connect_host(host, config) when host == node(), do: {:ok, nil} |> check_dir(host, config)

  defp connect_host(host, config) do
    :erlang.set_cookie(host, config.cookie)

    with true <-
           :net_kernel.hidden_connect_node(host) == true || {:error, {:host_unreachable, host}},
         true <- tether_started?(host) || {:error, {:tether_not_running, host}} do
      {:ok, :erpc.call(host, :code, :lib_dir, [:tether], 10_000) |> List.to_string()}
      |> check_dir(host, config)
    end
  catch
    :error, {:erpc, _} -> {:error, {:host_unreachable, host}}
  end

  # Through OTP's public view of the host (its started applications), not Tether's internals.
  defp tether_started?(host) do
    host
    |> :erpc.call(Application, :started_applications, [], 10_000)
    |> List.keymember?(:tether, 0)
  end

  defp check_dir(result, host, %{boot: {:mix_run, dir}}) do
    exists? = if host == node(), do: File.dir?(dir), else: :erpc.call(host, File, :dir?, [dir])

    exists? or
      raise ArgumentError, "invalid value for :boot option: #{dir} is not a directory on #{host}"

    result
  end

  defp check_dir(result, _host, _config), do: result
end
