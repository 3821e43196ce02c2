package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/pkcshsm/pkcshsm/tokenlib/store"
)

func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "token")
	defer os.RemoveAll(dir)

	st, err := store.Open(dir, store.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer st.Close()

	// The SO initializes the token and sets the USER PIN.
	if err := st.InitToken(ctx, []byte("so-pin-1234"), "my token"); err != nil {
		fmt.Println(err)
		return
	}
	so, _ := st.Login(ctx, store.SO, []byte("so-pin-1234"))
	st.InitUserPIN(ctx, so, []byte("user-pin-5678"))
	so.Destroy()

	// The USER logs in and creates a private key object; its attributes
	// are sealed on disk.
	dk, err := st.Login(ctx, store.User, []byte("user-pin-5678"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer dk.Destroy()
	const ckaLabel, ckoSecretKey = 0x03, 4
	key := &store.Object{Class: ckoSecretKey, Private: true,
		Attrs: map[uint32][]byte{ckaLabel: []byte("aes-1")}}
	if err := st.Create(ctx, dk, key); err != nil {
		fmt.Println(err)
		return
	}

	found, _ := st.List(ctx, dk, store.Filter{Classes: []uint{ckoSecretKey},
		Attrs: map[uint32][]byte{ckaLabel: []byte("aes-1")}})
	fmt.Println(len(found), string(found[0].Attrs[ckaLabel]), found[0].Version)

	// Without a login only public objects are visible.
	public, _ := st.List(ctx, nil, store.Filter{})
	fmt.Println(len(public))

	_, err = st.Login(ctx, store.User, []byte("not-my-pin"))
	fmt.Println(errors.Is(err, store.ErrPINIncorrect))
	// Output:
	// 1 aes-1 1
	// 0
	// true
}
