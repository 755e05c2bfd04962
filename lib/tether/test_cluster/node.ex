defmodule Tether.TestCluster.Node do
  @moduledoc false
  # One node of a cluster as the manager tracks it, and the steps of its life:
  #
  #     :booting ──joined──▶ :running ──DOWN──▶ :restarting ──backoff──▶ :booting
  #     :booting ──not joined in time (a restart)──▶ :boot_failed ──DOWN──▶ (a crash)
  #     a crash after :max_restarts, a failed restart, its host lost ──▶ :failed
  #     any ──stop──▶ :stopping ──DOWN──▶ :stopped (then forgotten)
  #
  # `launching` is the ref of a start its keeper is doing; `os_pid`, `pgid` and `exec_pid`
  # are set while its OS process runs (on `host`).

  alias Tether.TestCluster.{Keeper, NodeSpec, OutputBuffer}

  @enforce_keys [:spec, :host, :keeper, :buffer]
  defstruct [
    :spec,
    :host,
    :keeper,
    :buffer,
    os_pid: nil,
    pgid: nil,
    exec_pid: nil,
    launching: nil,
    status: :booting,
    restart_count: 0,
    health: nil
  ]

  @type status ::
          :booting | :running | :restarting | :stopping | :stopped | :boot_failed | :failed

  @type health :: Tether.TestCluster.Manager.health()

  @type t :: %__MODULE__{
          spec: NodeSpec.t(),
          host: node,
          keeper: pid,
          buffer: OutputBuffer.t(),
          os_pid: Tether.os_pid() | nil,
          pgid: Tether.os_pid() | nil,
          exec_pid: pid | nil,
          launching: reference | nil,
          status: status,
          restart_count: non_neg_integer,
          health: health | nil
        }

  @doc "A node of `spec`, booting, with its keeper (linked to the calling manager)."
  @spec new(NodeSpec.t()) :: t
  def new(spec) do
    %__MODULE__{
      spec: spec,
      host: spec.host,
      keeper: Keeper.start_link(spec.name),
      buffer: OutputBuffer.new(spec.name)
    }
  end

  @doc "Its keeper was asked to start it (`ref`)."
  @spec launching(t, reference) :: t
  def launching(node, ref), do: %{node | launching: ref, status: :booting}

  @doc "Its OS process started; each leads its own group, so its os_pid is the group id."
  @spec launched(t, pid, Tether.os_pid()) :: t
  def launched(node, exec_pid, os_pid),
    do: %{node | launching: nil, os_pid: os_pid, pgid: os_pid, exec_pid: exec_pid}

  @doc "Its OS process could not be started."
  @spec launch_failed(t) :: t
  def launch_failed(node), do: %{node | launching: nil}

  @doc "Its OS process is gone."
  @spec down(t) :: t
  def down(node), do: %{node | os_pid: nil, exec_pid: nil}

  @doc "Its restart begins."
  @spec restarting(t) :: t
  def restarting(node), do: %{node | restart_count: node.restart_count + 1, status: :booting}

  @doc "It is now `status`."
  @spec status(t, status) :: t
  def status(node, status), do: %{node | status: status}

  @doc "Whether it is (still) booting the OS process `os_pid`."
  @spec booting?(t, Tether.os_pid()) :: boolean
  def booting?(%__MODULE__{status: :booting, os_pid: os_pid}, os_pid), do: true
  def booting?(_node, _os_pid), do: false

  @doc "A chunk of its output."
  @spec output(t, :stdout | :stderr, binary) :: t
  def output(node, stream, data),
    do: %{node | buffer: OutputBuffer.add(node.buffer, stream, data)}

  @doc "It now runs as `spec` on `spec.host` (moved there); its keeper learns its name."
  @spec moved(t, NodeSpec.t()) :: t
  def moved(node, spec) do
    if spec.name != node.spec.name, do: Keeper.rename(node.keeper, spec.name)
    %{node | spec: spec, host: spec.host}
  end

  @doc "Forgotten: its keeper ends."
  @spec forget(t) :: :ok
  def forget(node), do: Keeper.stop(node.keeper)

  @doc "What `Tether.TestCluster.Manager.nodes/1` says of it."
  @spec info(t) :: Tether.TestCluster.Manager.info()
  def info(node) do
    %{
      name: node.spec.name,
      host: node.host,
      http_port: node.spec.http_port,
      url: NodeSpec.url(node.spec),
      hostname: node.spec.hostname,
      os_pid: node.os_pid,
      exec_pid: node.exec_pid,
      status: node.status,
      restart_count: node.restart_count
    }
  end

  @doc "`info/1` and its last health check, as `Tether.TestCluster.Manager.status/2` says."
  @spec status_info(t) :: Tether.TestCluster.Manager.node_status()
  def status_info(node), do: Map.put(info(node), :health, node.health)
end
