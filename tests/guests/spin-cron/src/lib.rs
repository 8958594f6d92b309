//! A component built as Spin's cron trigger expects (`fermyon:spin-cron@2.0.0`'s world
//! `spin-cron`): it exports `handle-cron-event`, and answers an odd timestamp with an
//! error naming it, so a test sees which time it was called with.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "fermyon:spin-cron/spin-cron@2.0.0",
    generate_all,
});

struct Cron;

export!(Cron);

impl Guest for Cron {
    fn handle_cron_event(metadata: Metadata) -> Result<(), Error> {
        if metadata.timestamp % 2 == 1 {
            return Err(Error::Other(format!(
                "odd timestamp {}",
                metadata.timestamp
            )));
        }
        Ok(())
    }
}
