package redistest

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// FailoverTimeout is how long a node or sentinel waits before it declares a
// master dead (cluster-node-timeout, down-after-milliseconds). Production
// deployments use seconds; a short one keeps failover tests short.
const FailoverTimeout = time.Second

// setupTimeout bounds forming a cluster or a sentinel group, and a failover.
const setupTimeout = 20 * time.Second

// Cluster is a Redis Cluster of three masters with one replica each, on free
// loopback ports, stopped when the test ends.
type Cluster struct {
	t     testing.TB
	Nodes []*Server
}

// StartCluster starts six cluster-enabled servers, forms the cluster with
// `redis-cli --cluster create … --cluster-replicas 1` and waits until every
// node says the cluster is ok and every replica is in sync.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	SkipShort(t)
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatal("redis-cli not found: run `make deps` (apt-get install redis-server)")
	}
	c := &Cluster{t: t}
	args := []string{"--cluster", "create"}
	for range 6 {
		n := StartWith(t, Options{Args: []string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", strconv.Itoa(int(FailoverTimeout / time.Millisecond))}})
		c.Nodes = append(c.Nodes, n)
		args = append(args, n.Addr())
	}
	out, err := exec.Command(cli, append(args, "--cluster-replicas", "1", "--cluster-yes")...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.poll("cluster ok, replicas in sync", func(ctx context.Context) error {
		for _, n := range c.Nodes {
			info, err := n.client().ClusterInfo(ctx).Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") {
				return fmt.Errorf("%s: cluster state not ok", n.Addr())
			}
			repl, err := n.client().Info(ctx, "replication").Result()
			if err != nil {
				return err
			}
			if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
				return fmt.Errorf("%s: replica not in sync", n.Addr())
			}
		}
		return nil
	})
	return c
}

// URL is the cluster's address for [store] redis with redis_mode cluster:
// every node, the first as the URL's host, the others as addr= seeds.
func (c *Cluster) URL() string {
	u := "redis://" + c.Nodes[0].Addr()
	for i, n := range c.Nodes[1:] {
		u += map[bool]string{true: "?", false: "&"}[i == 0] + "addr=" + n.Addr()
	}
	return u
}

// MasterOf returns the node that is master of key's slot, as the live
// nodes see it.
func (c *Cluster) MasterOf(key string) *Server {
	c.t.Helper()
	var m *Server
	c.poll("master of "+key, func(ctx context.Context) error {
		var err error
		m, err = c.masterOf(ctx, key)
		return err
	})
	return m
}

// WaitFailover waits until a node other than old is master of key's slot
// (the replica promoted after old was stopped) and returns it.
func (c *Cluster) WaitFailover(key string, old *Server) *Server {
	c.t.Helper()
	var m *Server
	c.poll("failover of "+key, func(ctx context.Context) error {
		var err error
		if m, err = c.masterOf(ctx, key); err == nil && m == old {
			err = errors.New("not promoted yet")
		}
		return err
	})
	return m
}

// masterOf asks every live node which node serves key's slot and returns
// the one that claims it for itself with role master.
func (c *Cluster) masterOf(ctx context.Context, key string) (*Server, error) {
	var errs []error
	for _, n := range c.Nodes {
		rc := n.client()
		slot, err := rc.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		slots, err := rc.ClusterSlots(ctx).Result()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		role, err := rc.Do(ctx, "ROLE").Slice()
		if err != nil || len(role) == 0 || role[0] != "master" {
			continue
		}
		for _, r := range slots {
			if int64(r.Start) <= slot && slot <= int64(r.End) && len(r.Nodes) > 0 && r.Nodes[0].Addr == n.Addr() {
				return n, nil
			}
		}
	}
	return nil, fmt.Errorf("no live node is master of %s: %w", key, errors.Join(errs...))
}

func (c *Cluster) poll(what string, try func(ctx context.Context) error) {
	c.t.Helper()
	if err := poll(try); err != nil {
		c.t.Fatalf("redistest: %s: %v", what, err)
	}
}

// Sentinel is one master and one replica, both requiring Password, watched
// by three sentinels as master MasterName, on free loopback ports.
type Sentinel struct {
	t         testing.TB
	Master    *Server
	Replica   *Server
	Sentinels []*Server
	opts      SentinelOptions
}

// SentinelOptions shape a sentinel group.
type SentinelOptions struct {
	// Password is required by the master and the replica (requirepass,
	// masterauth, and the sentinels' auth-pass).
	Password string
	// SentinelPassword, when set, is required by the sentinels.
	SentinelPassword string
}

// MasterName is the name the sentinels monitor the master as.
const MasterName = "tollgate"

// StartSentinel starts the master, its replica (waiting until it is in
// sync) and three sentinels with quorum 2, and waits until every sentinel
// knows the replica and the other two.
func StartSentinel(t testing.TB, opts SentinelOptions) *Sentinel {
	t.Helper()
	SkipShort(t)
	data := Options{Password: opts.Password}
	if opts.Password != "" {
		data.Args = []string{"--masterauth", opts.Password}
	}
	s := &Sentinel{t: t, opts: opts, Master: StartWith(t, data)}
	data.Args = append(data.Args, "--replicaof", "127.0.0.1", strconv.Itoa(s.Master.Port()))
	s.Replica = StartWith(t, data)
	if err := poll(func(ctx context.Context) error {
		repl, err := s.Replica.client().Info(ctx, "replication").Result()
		if err == nil && !strings.Contains(repl, "master_link_status:up") {
			err = errors.New("replica not in sync")
		}
		return err
	}); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	conf := fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 2\nsentinel down-after-milliseconds %s %d\nsentinel failover-timeout %s 10000\n",
		MasterName, s.Master.Port(), MasterName, FailoverTimeout/time.Millisecond, MasterName)
	if opts.Password != "" {
		conf += fmt.Sprintf("sentinel auth-pass %s %s\n", MasterName, opts.Password)
	}
	if opts.SentinelPassword != "" {
		conf += "sentinel sentinel-pass " + opts.SentinelPassword + "\n"
	}
	for range 3 {
		s.Sentinels = append(s.Sentinels, StartWith(t, Options{Sentinel: conf, Password: opts.SentinelPassword}))
	}
	if err := poll(func(ctx context.Context) error {
		for _, sn := range s.Sentinels {
			m, err := s.sentinel(sn).Master(ctx, MasterName).Result()
			if err != nil {
				return err
			}
			if m["num-slaves"] != "1" || m["num-other-sentinels"] != "2" {
				return fmt.Errorf("sentinel %s knows %s replicas and %s other sentinels", sn.Addr(), m["num-slaves"], m["num-other-sentinels"])
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("redistest: sentinels: %v", err)
	}
	return s
}

// URL is the address for [store] redis with redis_mode sentinel, without
// credentials: every sentinel and master_name.
func (s *Sentinel) URL() string {
	u := "redis://" + s.Sentinels[0].Addr() + "?master_name=" + MasterName
	for _, sn := range s.Sentinels[1:] {
		u += "&addr=" + sn.Addr()
	}
	return u
}

// WaitFailover waits until the sentinels name the replica as master and it
// says so itself (after Master was stopped).
func (s *Sentinel) WaitFailover() {
	s.t.Helper()
	if err := poll(func(ctx context.Context) error {
		for _, sn := range s.Sentinels {
			addr, err := s.sentinel(sn).GetMasterAddrByName(ctx, MasterName).Result()
			if err != nil {
				return err
			}
			if len(addr) != 2 || addr[1] != strconv.Itoa(s.Replica.Port()) {
				return fmt.Errorf("sentinel %s still names %v", sn.Addr(), addr)
			}
		}
		role, err := s.Replica.client().Do(ctx, "ROLE").Slice()
		if err == nil && (len(role) == 0 || role[0] != "master") {
			err = errors.New("replica not promoted yet")
		}
		return err
	}); err != nil {
		s.t.Fatalf("redistest: sentinel failover: %v", err)
	}
}

func (s *Sentinel) sentinel(sn *Server) *redis.SentinelClient {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if sn.sc == nil {
		sn.sc = redis.NewSentinelClient(&redis.Options{Addr: sn.Addr(), Password: s.opts.SentinelPassword, MaxRetries: -1,
			DialTimeout: time.Second, ReadTimeout: time.Second})
		s.t.Cleanup(func() { sn.sc.Close() })
	}
	return sn.sc
}

// client is a client to this server alone, closed when the test ends.
func (s *Server) client() *redis.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rc == nil {
		s.rc = redis.NewClient(&redis.Options{Addr: s.Addr(), Password: s.opts.Password, MaxRetries: -1,
			DialTimeout: time.Second, ReadTimeout: time.Second})
		s.t.Cleanup(func() { s.rc.Close() })
	}
	return s.rc
}

// poll runs try every 50 ms until it succeeds or setupTimeout passes.
func poll(try func(ctx context.Context) error) error {
	deadline := time.Now().Add(setupTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := try(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
}
