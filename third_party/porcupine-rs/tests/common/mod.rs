pub mod register_model;
