// Command porcupine-go checks capkv Jepsen histories (history.jsonl, see
// docs/jepsen.md "History format") for linearizability with Porcupine, the
// Go original (github.com/anishathalye/porcupine), independently of the
// porcupine-rs search that `kv check` uses.
//
// It exists so that a verdict of our checker can be confirmed by a second,
// separately written implementation of the WGL search: the model below is
// written from the history format's table, not translated from the Rust
// checker. Run it through scripts/porcupine-go.sh.
//
// Outcomes map to operations exactly as docs/jepsen.md states:
//
//	ok read -> v               a read that returned v (null: absent)
//	ok write / ok cas          a write / a swapped cas
//	fail cas, no "error"       compare failed: no effect, register != expected
//	fail with "error"          dropped (definitely did not happen)
//	fail read or write         dropped
//	info, or no completion     write / cas with unknown outcome, return at +inf;
//	                           a read is dropped
//
// Exit status: 0 all files linearizable, 1 some file is not, 2 unknown
// (timeout) or bad input.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
)

type event struct {
	Process uint64          `json:"process"`
	Type    string          `json:"type"`
	F       string          `json:"f"`
	Key     string          `json:"key"`
	Value   json.RawMessage `json:"value"`
	TimeNs  int64           `json:"time_ns"`
	Error   *string         `json:"error"`
}

// register is one key's state: absent, or an integer.
type register struct {
	present bool
	v       int64
}

type kind int

const (
	read kind = iota
	write
	writeUnknown
	casOk
	casFailed
	casUnknown
)

type input struct {
	key      string
	kind     kind
	v        int64 // written value, or cas new value
	expected int64 // cas only
}

type output struct {
	read register // reads only
}

func step(state, in, out interface{}) (bool, interface{}) {
	s := state.(register)
	i := in.(input)
	switch i.kind {
	case read:
		return out.(output).read == s, s
	case write, writeUnknown:
		return true, register{true, i.v}
	case casOk:
		if s.present && s.v == i.expected {
			return true, register{true, i.v}
		}
		return false, s
	case casFailed:
		return !(s.present && s.v == i.expected), s
	case casUnknown:
		if s.present && s.v == i.expected {
			return true, register{true, i.v}
		}
		return true, s
	}
	panic("unreachable")
}

func describeReg(r register) string {
	if !r.present {
		return "absent"
	}
	return fmt.Sprint(r.v)
}

var model = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(input).key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() interface{} { return register{} },
	Step: step,
	DescribeOperation: func(in, out interface{}) string {
		i := in.(input)
		switch i.kind {
		case read:
			return fmt.Sprintf("get(%s) -> %s", i.key, describeReg(out.(output).read))
		case write:
			return fmt.Sprintf("set(%s, %d)", i.key, i.v)
		case writeUnknown:
			return fmt.Sprintf("set(%s, %d) ?", i.key, i.v)
		case casOk:
			return fmt.Sprintf("cas(%s, %d -> %d) ok", i.key, i.expected, i.v)
		case casFailed:
			return fmt.Sprintf("cas(%s, %d -> %d) failed", i.key, i.expected, i.v)
		default:
			return fmt.Sprintf("cas(%s, %d -> %d) ?", i.key, i.expected, i.v)
		}
	},
	DescribeState: func(s interface{}) string { return describeReg(s.(register)) },
}

func parseInt(raw json.RawMessage) (register, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return register{}, nil
	}
	var v int64
	if err := json.Unmarshal(raw, &v); err != nil {
		return register{}, err
	}
	return register{true, v}, nil
}

func parseCas(raw json.RawMessage) (int64, int64, error) {
	var pair []int64
	if err := json.Unmarshal(raw, &pair); err != nil || len(pair) != 2 {
		return 0, 0, fmt.Errorf("cas value %s is not [expected, new]", raw)
	}
	return pair[0], pair[1], nil
}

// load pairs each invoke with its process's next completion.
func load(path string) ([]porcupine.Operation, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	open := map[uint64]event{}
	clients := map[uint64]int{}
	var ops []porcupine.Operation
	add := func(inv event, done *event) error {
		client, ok := clients[inv.Process]
		if !ok {
			client = len(clients)
			clients[inv.Process] = client
		}
		in := input{key: inv.Key}
		var out output
		ret := int64(math.MaxInt64)
		unknown := done == nil || done.Type == "info"
		if done != nil && !unknown {
			ret = done.TimeNs
		}
		if done != nil && done.Type == "fail" && (done.Error != nil || inv.F != "cas") {
			return nil // did not happen
		}
		switch inv.F {
		case "read":
			if unknown {
				return nil
			}
			r, err := parseInt(done.Value)
			if err != nil {
				return fmt.Errorf("read value: %v", err)
			}
			in.kind, out.read = read, r
		case "write":
			r, err := parseInt(inv.Value)
			if err != nil || !r.present {
				return fmt.Errorf("write value %s is not an integer", inv.Value)
			}
			in.v = r.v
			in.kind = write
			if unknown {
				in.kind = writeUnknown
			}
		case "cas":
			e, n, err := parseCas(inv.Value)
			if err != nil {
				return err
			}
			in.expected, in.v = e, n
			switch {
			case unknown:
				in.kind = casUnknown
			case done.Type == "ok":
				in.kind = casOk
			default:
				in.kind = casFailed
			}
		default:
			return fmt.Errorf("unknown f %q", inv.F)
		}
		ops = append(ops, porcupine.Operation{ClientId: client, Input: in, Call: inv.TimeNs, Output: out, Return: ret})
		return nil
	}
	line := 0
	for sc.Scan() {
		line++
		if len(sc.Bytes()) == 0 {
			continue
		}
		var ev event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return nil, fmt.Errorf("%s:%d: %v", path, line, err)
		}
		if ev.Type == "invoke" {
			if _, busy := open[ev.Process]; busy {
				return nil, fmt.Errorf("%s:%d: process %d invoked twice", path, line, ev.Process)
			}
			open[ev.Process] = ev
			continue
		}
		inv, ok := open[ev.Process]
		if !ok {
			return nil, fmt.Errorf("%s:%d: completion without invoke", path, line)
		}
		delete(open, ev.Process)
		done := ev
		if err := add(inv, &done); err != nil {
			return nil, fmt.Errorf("%s:%d: %v", path, line, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, inv := range open {
		if err := add(inv, nil); err != nil {
			return nil, err
		}
	}
	return ops, nil
}

func main() {
	timeout := flag.Duration("timeout", 5*time.Minute, "search budget per file (0: none)")
	html := flag.String("html", "", "write Porcupine's visualization of each file to DIR/<n>.html")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: porcupine-go [-timeout D] [-html DIR] history.jsonl...")
		os.Exit(2)
	}
	status := 0
	for n, path := range flag.Args() {
		ops, err := load(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "porcupine-go: %v\n", err)
			os.Exit(2)
		}
		start := time.Now()
		res, info := porcupine.CheckOperationsVerbose(model, ops, *timeout)
		verdict := map[porcupine.CheckResult]string{
			porcupine.Ok: "linearizable", porcupine.Illegal: "NOT linearizable", porcupine.Unknown: "unknown (timed out)",
		}[res]
		fmt.Printf("%s: %s (%d operations, Porcupine %.2fs)\n", path, verdict, len(ops), time.Since(start).Seconds())
		if *html != "" {
			out := fmt.Sprintf("%s/%d.html", *html, n)
			if err := porcupine.VisualizePath(model, info, out); err != nil {
				fmt.Fprintf(os.Stderr, "porcupine-go: %v\n", err)
			} else {
				fmt.Printf("  visualization: %s\n", out)
			}
		}
		switch {
		case res == porcupine.Illegal:
			status = 1
		case res == porcupine.Unknown && status == 0:
			status = 2
		}
	}
	os.Exit(status)
}
