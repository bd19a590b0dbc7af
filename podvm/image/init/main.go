// peerpods-init is /init of the pod VM's direct-boot initrd: it loads the root disk's drivers,
// mounts the root file system the kernel command line names and hands over to systemd.
//
// It replaces initramfs-tools' shell init, which starts udev, probes every device and runs a
// dozen tools before the root is mounted: about five seconds of an emulated pod VM's boot for
// what three system calls do when the disk, its drivers and the partition are known.
//
// Command line: root=PARTUUID=<uuid> (a GPT partition) or root=/dev/<name>; ro or rw;
// rootfstype= (default ext4); rootflags=; init= (default /sbin/init);
// peerpods.rootwait=<seconds> (default 60). The modules to load are listed, in load order, in
// /etc/peerpods-init/modules (paths inside the initrd). Any failure is printed on the console
// and ends this process, so the kernel panics with the reason beside it.
package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

const (
	moduleList     = "/etc/peerpods-init/modules"
	newRoot        = "/root"
	sysFinitModule = 313 // x86_64
	gptSignature   = "EFI PART"
)

type settings struct {
	root     string // PARTUUID=<uuid> or /dev/<name>
	fsType   string
	flags    uintptr
	data     string
	init     string
	rootWait time.Duration
}

func parseCmdline(cmdline string) (settings, error) {
	s := settings{fsType: "ext4", flags: syscall.MS_RDONLY, init: "/sbin/init", rootWait: 60 * time.Second}
	for _, word := range strings.Fields(cmdline) {
		key, value, _ := strings.Cut(word, "=")
		switch key {
		case "root":
			s.root = value
		case "rootfstype":
			s.fsType = value
		case "rootflags":
			s.data = value
		case "init":
			s.init = value
		case "ro":
			s.flags |= syscall.MS_RDONLY
		case "rw":
			s.flags &^= syscall.MS_RDONLY
		case "peerpods.rootwait":
			seconds, err := strconv.ParseFloat(value, 64)
			if err != nil || seconds <= 0 {
				return s, fmt.Errorf("peerpods.rootwait=%q is not a positive number of seconds", value)
			}
			s.rootWait = time.Duration(seconds * float64(time.Second))
		}
	}
	if s.root == "" {
		return s, errors.New("no root= on the kernel command line")
	}
	if !strings.HasPrefix(s.root, "PARTUUID=") && !strings.HasPrefix(s.root, "/dev/") {
		return s, fmt.Errorf("root=%s: only root=PARTUUID=<uuid> and root=/dev/<name> are understood", s.root)
	}
	return s, nil
}

func mountAPI() error {
	for _, m := range []struct{ source, target, fsType string }{
		{"devtmpfs", "/dev", "devtmpfs"},
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
	} {
		if err := syscall.Mount(m.source, m.target, m.fsType, syscall.MS_NOSUID|syscall.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.fsType, m.target, err)
		}
	}
	return nil
}

func loadModules() error {
	list, err := os.ReadFile(moduleList)
	if err != nil {
		return err
	}
	params, _ := syscall.BytePtrFromString("")
	for _, path := range strings.Fields(string(list)) {
		file, err := os.Open(path)
		if err != nil {
			return err
		}
		_, _, errno := syscall.Syscall(sysFinitModule, file.Fd(), uintptr(unsafe.Pointer(params)), 0)
		file.Close()
		if errno != 0 && errno != syscall.EEXIST {
			return fmt.Errorf("load %s: %w", path, errno)
		}
	}
	return nil
}

// guid formats a GPT GUID as the kernel prints PARTUUID: the first three fields little-endian.
func guid(b []byte) string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x",
		binary.LittleEndian.Uint32(b[0:4]), binary.LittleEndian.Uint16(b[4:6]),
		binary.LittleEndian.Uint16(b[6:8]), b[8:10], b[10:16])
}

// partitionGUIDs reads the unique GUID of every entry of a disk's GPT, by partition number.
func partitionGUIDs(disk string) (map[int]string, error) {
	sectorText, err := os.ReadFile(filepath.Join("/sys/class/block", disk, "queue/logical_block_size"))
	if err != nil {
		return nil, err
	}
	sector, err := strconv.ParseInt(strings.TrimSpace(string(sectorText)), 10, 64)
	if err != nil || sector <= 0 {
		return nil, fmt.Errorf("%s: logical block size %q", disk, sectorText)
	}
	device, err := os.Open("/dev/" + disk)
	if err != nil {
		return nil, err
	}
	defer device.Close()
	header := make([]byte, 92)
	if _, err := device.ReadAt(header, sector); err != nil {
		return nil, err
	}
	if string(header[0:8]) != gptSignature {
		return nil, nil // not a GPT disk
	}
	entriesAt := int64(binary.LittleEndian.Uint64(header[72:80])) * sector
	count := binary.LittleEndian.Uint32(header[80:84])
	size := binary.LittleEndian.Uint32(header[84:88])
	if count > 1024 || size < 128 || size > 4096 {
		return nil, fmt.Errorf("%s: implausible GPT (%d entries of %d bytes)", disk, count, size)
	}
	entries := make([]byte, int(count)*int(size))
	if _, err := device.ReadAt(entries, entriesAt); err != nil {
		return nil, err
	}
	guids := map[int]string{}
	for i := 0; i < int(count); i++ {
		entry := entries[i*int(size) : (i+1)*int(size)]
		guids[i+1] = guid(entry[16:32])
	}
	return guids, nil
}

// findPartUUID is the /dev name of the partition whose GPT unique GUID is uuid, if present yet.
func findPartUUID(uuid string) (string, error) {
	uuid = strings.ToLower(uuid)
	names, err := os.ReadDir("/sys/class/block")
	if err != nil {
		return "", err
	}
	disks := map[string]map[int]string{}
	for _, name := range names {
		numberText, err := os.ReadFile(filepath.Join("/sys/class/block", name.Name(), "partition"))
		if err != nil {
			continue // a whole disk
		}
		number, err := strconv.Atoi(strings.TrimSpace(string(numberText)))
		if err != nil {
			continue
		}
		real, err := filepath.EvalSymlinks(filepath.Join("/sys/class/block", name.Name()))
		if err != nil {
			continue
		}
		disk := filepath.Base(filepath.Dir(real))
		if _, seen := disks[disk]; !seen {
			if disks[disk], err = partitionGUIDs(disk); err != nil {
				return "", err
			}
		}
		if disks[disk][number] == uuid {
			return "/dev/" + name.Name(), nil
		}
	}
	return "", nil
}

func waitForRoot(s settings) (string, error) {
	deadline := time.Now().Add(s.rootWait)
	for {
		if path, ok := strings.CutPrefix(s.root, "PARTUUID="); ok {
			device, err := findPartUUID(path)
			if err != nil {
				return "", err
			}
			if device != "" {
				return device, nil
			}
		} else if _, err := os.Stat(s.root); err == nil {
			return s.root, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("root=%s did not appear within %s (block devices: %s)", s.root, s.rootWait, blockDevices())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func blockDevices() string {
	names, _ := os.ReadDir("/sys/class/block")
	listed := make([]string, 0, len(names))
	for _, name := range names {
		listed = append(listed, name.Name())
	}
	if len(listed) == 0 {
		return "none"
	}
	return strings.Join(listed, " ")
}

// switchRoot moves the API file systems and the root into place, frees the initrd's files and
// executes init, as switch_root does.
func switchRoot(s settings) error {
	for _, dir := range []string{"/dev", "/proc", "/sys"} {
		if err := syscall.Mount(dir, newRoot+dir, "", syscall.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s into the root: %w", dir, err)
		}
	}
	for _, path := range []string{"/init", "/etc", "/lib"} {
		os.RemoveAll(path)
	}
	if err := os.Chdir(newRoot); err != nil {
		return err
	}
	if err := syscall.Mount(".", "/", "", syscall.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move the root to /: %w", err)
	}
	if err := syscall.Chroot("."); err != nil {
		return err
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	argv := append([]string{s.init}, os.Args[1:]...)
	return fmt.Errorf("exec %s: %w", s.init, syscall.Exec(s.init, argv, os.Environ()))
}

func run() error {
	if err := mountAPI(); err != nil {
		return err
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return err
	}
	s, err := parseCmdline(string(cmdline))
	if err != nil {
		return err
	}
	if err := loadModules(); err != nil {
		return err
	}
	device, err := waitForRoot(s)
	if err != nil {
		return err
	}
	if err := syscall.Mount(device, newRoot, s.fsType, s.flags, s.data); err != nil {
		return fmt.Errorf("mount %s (%s) on %s: %w", device, s.fsType, newRoot, err)
	}
	// Lstat: init is often an absolute symbolic link, meaningful only once the root is /.
	if _, err := os.Lstat(newRoot + s.init); err != nil {
		return fmt.Errorf("init=%s: not in the root file system on %s: %w", s.init, device, err)
	}
	return switchRoot(s)
}

func main() {
	err := run()
	fmt.Fprintf(os.Stderr, "peerpods-init: error: %v\n", err)
	os.Exit(1)
}
